// te_dot_mac: one column of the multiplier-adder-tree array, `mac` kind.
//
// Holds the column's ROWS stationary weights; dot = sum_r a[r] * w[r] (combinational),
// modulo 2^PW (exact: the column sum fits PW bits by construction). Written as plain `*`
// and `+`: the baseline, mapped by the synthesis tool's own multiplier and adder.
`default_nettype none
module te_dot_mac #(
    parameter integer ROWS = 8,               // products per column
    parameter integer AW   = 9,               // activation width, signed
    parameter integer WW   = 8,               // weight width, signed
    parameter integer PW   = 20               // result width, signed
) (
    input  wire                   clk,        // the one clock (weights only)
    // weight load
    input  wire [ROWS-1:0]        w_load,     // one-hot: take w_in as the weight of row r
    input  wire signed [WW-1:0]   w_in,
    // activations (shared by every column) and the column's dot product
    input  wire [ROWS*AW-1:0]     a,          // row r at [r*AW +: AW], signed
    output reg  signed [PW-1:0]   dot         // sum_r a[r] * w[r], combinational
);
    reg signed [WW-1:0] w_q [0:ROWS-1];

    integer r;
    always @(posedge clk) begin
        for (r = 0; r < ROWS; r = r + 1)
            if (w_load[r]) w_q[r] <= w_in;
    end

    always @* begin
        dot = {PW{1'b0}};
        for (r = 0; r < ROWS; r = r + 1)
            dot = dot + PW'($signed(a[r*AW +: AW])) * PW'(w_q[r]);
    end
endmodule
`default_nettype wire
