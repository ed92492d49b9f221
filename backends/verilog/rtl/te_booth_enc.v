// te_booth_enc: radix-4 Booth encoder of one WW-bit signed weight (combinational).
//
// Digit j in -2..2 looks at bits (2j+1, 2j, 2j-1) of the weight sign-extended to 2*ND bits
// (bit -1 is 0): d_j = -2 b(2j+1) + b(2j) + b(2j-1), and w = sum_j d_j 4^j. Each digit is
// coded as {neg, two, nz}: nz = (d_j != 0), two = (|d_j| = 2), neg = b(2j+1) the sign (a zero
// digit may have neg set: its partial product ~0 + 1 is still 0). This form selects a
// partial-product bit with one multiplexer, one AND and one XOR: (two ? a[i-1] : a[i]) & nz
// ^ neg (te_booth_pp); one-hot {two, one} would need an AND-OR per bit, since the PE cannot
// know that stored bits are exclusive.
// The arrays encode a weight once, when it is loaded (the encoders sit at the load port,
// one per column, shared by every row), and keep the digits as the stationary operand.
`default_nettype none
module te_booth_enc #(
    parameter integer WW = 8                  // weight width, signed
) (
    input  wire [WW-1:0]              w,      // the weight, two's complement
    output reg  [3*((WW+1)/2)-1:0]    digits  // digit j at [3j +: 3] = {neg, two, nz}
);
    localparam integer ND = (WW + 1) / 2;     // digits
    wire [2*ND-1:0] ws = (2*ND)'($signed(w)); // sign-extended to whole digits
    wire [2*ND:0]   b  = {ws, 1'b0};          // b[k+1] = bit k; b[0] = bit -1 = 0

    integer j;
    always @* begin
        for (j = 0; j < ND; j = j + 1) begin
            digits[3*j + 1] = (b[2*j+2] & ~b[2*j+1] & ~b[2*j])
                            | (~b[2*j+2] & b[2*j+1] & b[2*j]);             // |d| = 2
            digits[3*j]     = (b[2*j+1] ^ b[2*j]) | digits[3*j + 1];      // d != 0
            digits[3*j + 2] = b[2*j+2];                                    // d < 0 (or -0)
        end
    end
endmodule
`default_nettype wire
