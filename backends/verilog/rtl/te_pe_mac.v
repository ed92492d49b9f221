// te_pe_mac: the processing element of the weight-stationary systolic array, `mac` kind.
//
// Holds one weight w; every cycle it passes its activation to the right and
// p_out = p_in + a_in * w down its column (both registered, one cycle per PE). The product
// and sum are computed modulo 2^PW: the array's final column sums fit PW bits by
// construction, so the wrap-around of partial sums cancels and the result is exact.
`default_nettype none
module te_pe_mac #(
    parameter integer AW = 9,                 // activation width, signed
    parameter integer WW = 8,                 // weight width, signed
    parameter integer PW = 20                 // partial-sum width, signed
) (
    input  wire                 clk,          // the one clock (no reset: data registers only)
    // weight load
    input  wire                 w_load,       // take w_in as the stationary weight
    input  wire signed [WW-1:0] w_in,
    // activation, moving right
    input  wire signed [AW-1:0] a_in,         // from the left neighbour (or the row skew)
    output reg  signed [AW-1:0] a_out,        // a_in, one cycle later
    // partial sum, moving down
    input  wire signed [PW-1:0] p_in,         // from the PE above (0 at the top row)
    output reg  signed [PW-1:0] p_out         // p_in + a_in * w, one cycle later
);
    reg signed [WW-1:0] w_q;                  // the stationary weight

    always @(posedge clk) begin
        if (w_load) w_q <= w_in;
        a_out <= a_in;
        p_out <= p_in + PW'(a_in) * PW'(w_q);
    end
endmodule
`default_nettype wire
