// te_pe_booth: the processing element of the weight-stationary systolic array, `booth` kind.
//
// Holds one weight as its radix-4 Booth digits (encoded once at load, te_booth_enc). Every
// cycle it passes its activation right and adds a * w to the carry-save partial sum coming
// down its column: the Booth rows of a * w (te_booth_pp) and the incoming sum and carry
// words go through one Wallace tree of 3:2 compressors (te_csa_tree) into the outgoing sum
// and carry registers. No carry propagates inside the PE: the array adds sum + carry once,
// at the bottom of each column. The products' constant part (te_booth_pp) is preloaded at
// the top of the column. Everything is modulo 2^PW, exact at the bottom by construction.
`default_nettype none
module te_pe_booth #(
    parameter integer AW = 9,                 // activation width, signed
    parameter integer ND = 4,                 // Booth digits of a weight, ceil(WW/2)
    parameter integer PW = 20                 // partial-sum width
) (
    input  wire              clk,             // the one clock (no reset: data registers only)
    // weight load: Booth digits of the stationary weight
    input  wire              w_load,          // take d_in as the stationary digits
    input  wire [3*ND-1:0]   d_in,            // digit j at [3j +: 3] = {neg, two, nz}
    // activation, moving right
    input  wire [AW-1:0]     a_in,            // from the left neighbour (or the row skew)
    output reg  [AW-1:0]     a_out,           // a_in, one cycle later
    // carry-save partial sum, moving down: value = s + c (mod 2^PW)
    input  wire [PW-1:0]     s_in,
    input  wire [PW-1:0]     c_in,
    output reg  [PW-1:0]     s_out,           // s_out + c_out = s_in + c_in + a_in * w,
    output reg  [PW-1:0]     c_out            //   one cycle later (less the constant part)
);
    reg  [3*ND-1:0]      d_q;                 // the stationary Booth digits
    wire [(ND+1)*PW-1:0] rows;
    wire [PW-1:0]        s_next, c_next;

    te_booth_pp #(.AW(AW), .ND(ND), .W(PW)) u_pp (.a(a_in), .digits(d_q), .rows(rows));
    // The incoming pair goes last, so that above the rows' bits it meets only the last level.
    te_csa_tree #(.N(ND + 3), .W(PW)) u_tree (
        .ops({c_in, s_in, rows}), .sum(s_next), .carry(c_next));

    always @(posedge clk) begin
        if (w_load) d_q <= d_in;
        a_out <= a_in;
        s_out <= s_next;
        c_out <= c_next;
    end
endmodule
`default_nettype wire
