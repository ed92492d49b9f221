// te_shift_acc: the shift-accumulator at the end of a bit-serial column.
//
// A column's dot product with weight bit plane p arrives as a signed plane sum x; the
// accumulator adds x * 2^p, or subtracts it for the sign plane: acc = sum_p +-(x_p << p).
// `first` starts a new sum. acc holds the complete result on the cycle after the `last`
// plane. One per column, shared by all the column's PEs; modulo 2^W, exact by construction.
`default_nettype none
module te_shift_acc #(
    parameter integer SW = 12,                // plane-sum width, signed
    parameter integer W  = 20,                // accumulator width, signed
    parameter integer PB = 3                  // plane index width
) (
    input  wire                clk,           // the one clock (no reset: data only)
    input  wire signed [SW-1:0] x,            // this cycle's plane sum
    input  wire [PB-1:0]       plane,         // its bit plane
    input  wire                first,         // start a new sum with this plane
    input  wire                neg,           // the sign plane: subtract
    output reg  [W-1:0]        acc            // the running sum (registered)
);
    wire [W-1:0] term = W'(x) << plane;
    wire [W-1:0] base = first ? {W{1'b0}} : acc;

    always @(posedge clk) acc <= base + (term ^ {W{neg}}) + W'(neg);  // -t = ~t + 1
endmodule
`default_nettype wire
