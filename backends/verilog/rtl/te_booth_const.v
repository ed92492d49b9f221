// te_booth_const: the constant part of COUNT Booth products (te_booth_pp), modulo 2^W.
//
// Each product's rows sum to a * w - K with K = -sum_j 2^(B-1+2j) (B = AW+1, j < ND), the
// sign-extension constants of its ND rows. A column of COUNT products adds COUNT * K once:
// the systolic array preloads it at the top of the column, the adder tree adds it as one
// more operand of its compressor tree.
`default_nettype none
module te_booth_const #(
    parameter integer AW    = 9,              // activation width, signed
    parameter integer ND    = 4,              // Booth digits per weight
    parameter integer W     = 20,             // width of the sum
    parameter integer COUNT = 1               // products in the sum
) (
    output wire [W-1:0] k                     // COUNT * K mod 2^W
);
    function automatic [W-1:0] total(input integer count);
        reg [W-1:0] one;
        integer j, n;
        begin
            one = {W{1'b0}};
            for (j = 0; j < ND; j = j + 1) one = one - (W'(1) << (AW + 2 * j));
            total = {W{1'b0}};
            for (n = 0; n < count; n = n + 1) total = total + one;
        end
    endfunction

    assign k = total(COUNT);
endmodule
`default_nettype wire
