// te_dot_bitserial: one column of the multiplier-adder-tree array, `bitserial` kind.
//
// Holds the column's ROWS weights; for the bit plane p of this cycle, sum = sum_r a[r] *
// bit_p(w[r]) (combinational): AND gates instead of multipliers, and an adder tree of
// plane-sum width. The column's shift-accumulator (te_shift_acc) weighs the planes.
`default_nettype none
module te_dot_bitserial #(
    parameter integer ROWS = 8,               // activations per column
    parameter integer AW   = 9,               // activation width, signed
    parameter integer WW   = 8,               // weight width (planes stored)
    parameter integer SW   = 12,              // plane-sum width, signed
    parameter integer PB   = 3                // plane index width
) (
    input  wire                   clk,        // the one clock (weights only)
    // weight load
    input  wire [ROWS-1:0]        w_load,     // one-hot: take w_in as the weight of row r
    input  wire [WW-1:0]          w_in,
    // this cycle's plane, activations (shared by every column) and plane sum
    input  wire [PB-1:0]          plane,
    input  wire [ROWS*AW-1:0]     a,          // row r at [r*AW +: AW], signed
    output reg  signed [SW-1:0]   sum         // sum_r a[r] * bit_plane(w[r])
);
    reg [WW-1:0] w_q [0:ROWS-1];

    integer r;
    always @(posedge clk) begin
        for (r = 0; r < ROWS; r = r + 1)
            if (w_load[r]) w_q[r] <= w_in;
    end

    always @* begin
        sum = {SW{1'b0}};
        for (r = 0; r < ROWS; r = r + 1)
            if (w_q[r][plane]) sum = sum + SW'($signed(a[r*AW +: AW]));
    end
endmodule
`default_nettype wire
