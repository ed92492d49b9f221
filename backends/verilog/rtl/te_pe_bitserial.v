// te_pe_bitserial: the processing element of the weight-stationary systolic array,
// `bitserial` kind (BitMoD-style bit-serial weights).
//
// Holds one weight; every cycle it passes its activation right and adds the activation,
// gated by bit `plane` of its weight, to the plane's partial sum coming down its column:
// p_out = p_in + (w[plane] ? a_in : 0). The plane index reaches PE[r][c] with its vector,
// along the array's diagonal. No multiplier: the column's shift-accumulator (te_shift_acc)
// weighs the planes, so 1..WW-bit weights share this datapath, one plane per cycle.
`default_nettype none
module te_pe_bitserial #(
    parameter integer AW = 9,                 // activation width, signed
    parameter integer WW = 8,                 // weight width (planes stored)
    parameter integer SW = 12,                // plane-sum width, signed
    parameter integer PB = 3                  // plane index width
) (
    input  wire                 clk,          // the one clock (no reset: data registers only)
    // weight load
    input  wire                 w_load,       // take w_in as the stationary weight
    input  wire [WW-1:0]        w_in,
    // the bit plane the activation at a_in is to be multiplied with
    input  wire [PB-1:0]        plane,
    // activation, moving right
    input  wire signed [AW-1:0] a_in,
    output reg  signed [AW-1:0] a_out,        // a_in, one cycle later
    // plane partial sum, moving down
    input  wire signed [SW-1:0] p_in,
    output reg  signed [SW-1:0] p_out         // p_in + (w[plane] ? a_in : 0), one cycle later
);
    reg [WW-1:0] w_q;                         // the stationary weight

    always @(posedge clk) begin
        if (w_load) w_q <= w_in;
        a_out <= a_in;
        p_out <= p_in + (w_q[plane] ? SW'(a_in) : {SW{1'b0}});
    end
endmodule
`default_nettype wire
