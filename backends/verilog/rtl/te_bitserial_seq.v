// te_bitserial_seq: the input sequencer of the bit-serial arrays.
//
// Holds the vector being worked on and issues one beat per weight bit plane to process:
// the planes of the tile's w_plane_mask below w_bits (captured at every weight beat), lowest
// first, each with its index, whether it is the vector's first and last, and whether it is
// the sign plane (plane w_bits-1 of a two's complement weight counts -2^(w_bits-1)). A tile
// whose mask selects no plane still takes one beat per vector, with the activations zeroed,
// so its results are 0 (skipped planes contribute nothing).
// Timing: a vector accepted at cycle t has its P beats at t+1 .. t+P; the next vector is
// accepted during the last beat, so one vector per P = max(1, popcount) cycles.
`default_nettype none
module te_bitserial_seq #(
    parameter integer ROWS = 8,               // activations per vector
    parameter integer AW   = 9,               // activation width
    parameter integer WW   = 8,               // weight width: planes 0..WW-1 (WW <= 8)
    parameter integer PB   = WW > 1 ? $clog2(WW) : 1  // plane index width (do not override)
) (
    input  wire               clk,
    input  wire               rst,            // synchronous, active high
    // tile settings, taken with every weight beat
    input  wire               w_take,         // a weight beat is written this cycle
    input  wire [3:0]         w_bits,         // planes in use, 1..8 (more than WW: WW)
    // planes at or above WW do not exist in this datapath
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [7:0]         w_plane_mask,   // planes to process (the nonzero ones)
    /* verilator lint_on UNUSEDSIGNAL */
    // vectors in
    input  wire               a_take,         // a_data is accepted this cycle
    output wire               a_ready,        // the current vector is on its last beat
    input  wire [ROWS*AW-1:0] a_data,
    // beats out (b_valid: this cycle's beat)
    output wire               b_valid,
    output wire [ROWS*AW-1:0] b_a,            // the vector (registered)
    output reg  [PB-1:0]      b_plane,        // bit plane index
    output wire               b_first,        // the vector's first beat: start a new sum
    output wire               b_last,         // its last beat: the sum is complete after it
    output wire               b_neg           // the sign plane: subtract
);
    reg  [WW-1:0]      planes_q;              // the tile's planes (never empty: see above)
    reg                none_q;                // the tile's mask selects no plane
    reg  [WW-1:0]      sign_q;                // one-hot: the sign plane, if in range
    reg  [WW-1:0]      rem;                   // planes left for the current vector
    reg  [ROWS*AW-1:0] a_q;

    wire [WW-1:0] low = rem & (~rem + 1'b1);  // one-hot: the lowest plane left
    assign b_valid = |rem;
    assign b_a     = a_q;
    assign b_first = rem == planes_q;
    assign b_last  = (rem & ~low) == {WW{1'b0}};
    assign b_neg   = |(low & sign_q);
    assign a_ready = b_last;                  // also true when idle (rem = 0)

    integer p;
    always @* begin
        b_plane = {PB{1'b0}};
        for (p = 0; p < WW; p = p + 1)
            if (low[p]) b_plane = PB'(p);
    end

    // the tile's settings, from a weight beat's w_bits and w_plane_mask
    wire [3:0]    bits = w_bits > 4'(WW) ? 4'(WW) : w_bits;
    wire [WW-1:0] in_range = WW'((9'd1 << bits) - 9'd1);   // planes below bits
    wire [WW-1:0] chosen = w_plane_mask[WW-1:0] & in_range;

    always @(posedge clk) begin
        if (w_take) begin
            none_q   <= chosen == {WW{1'b0}};
            planes_q <= chosen == {WW{1'b0}} ? WW'(1) : chosen;
            sign_q   <= WW'((9'd1 << bits) >> 1);              // plane bits-1 (none if 0)
        end
        if (a_take) a_q <= none_q ? {(ROWS*AW){1'b0}} : a_data;
        if (rst)         rem <= {WW{1'b0}};
        else if (a_take) rem <= planes_q;
        else             rem <= rem & ~low;
    end
endmodule
`default_nettype wire
