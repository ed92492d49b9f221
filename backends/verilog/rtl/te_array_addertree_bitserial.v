// te_array_addertree_bitserial: multiplier-adder-tree array of bit-serial columns.
//
// Interface: /work/wt/ARRAY_CONTRACT.md (module name te_array_<engine>_<pe>). A vector is
// run once per weight bit plane to process (te_bitserial_seq: the planes of w_plane_mask
// below w_bits, all-zero planes skipped); every column (te_dot_bitserial) sums its
// activations gated by the plane's weight bits, and its shift-accumulator (te_shift_acc)
// adds the plane sums weighted by +-2^p (the sign plane negative).
// o[c] = sum_r a[r] * w[r][c], exact for weights of w_bits bits two's complement.
//
// Timing, for a vector accepted at cycle t with P = max(1, planes to process) beats: its
// beats are issued at t+1 .. t+P and accumulated at the end of each; o_valid at t+P+1.
// Latency = P + 1 cycles; interval P cycles (a_ready once per P cycles).
// Weights: w_valid & w_ready writes row w_row of the tile and takes w_bits and
// w_plane_mask for the tile; w_ready = !busy (drained), a_ready needs !w_valid.
`default_nettype none
module te_array_addertree_bitserial #(
    parameter integer ROWS = 8,               // reduction lanes: one activation per row
    parameter integer COLS = 8,               // output lanes: one weight column per col
    parameter integer AW   = 9,               // activation width, signed
    parameter integer WW   = 8,               // weight width, signed, <= 8 (planes)
    parameter integer PW   = AW + WW + $clog2(ROWS)  // partial-sum width (exact bound)
) (
    input  wire                   clk,
    input  wire                   rst,        // synchronous, active high
    // weight tile load: row w_row of the tile per beat
    input  wire                   w_valid,
    input  wire [$clog2(ROWS > 1 ? ROWS : 2)-1:0] w_row,  // >= 1 bit
    input  wire [COLS*WW-1:0]     w_data,     // column c at [c*WW +: WW]
    input  wire [3:0]             w_bits,     // planes in use (1..8)
    input  wire [7:0]             w_plane_mask,  // planes to process (the nonzero ones)
    output wire                   w_ready,    // the array is drained: may load
    // compute: one activation vector per P cycles
    input  wire                   a_valid,
    output wire                   a_ready,
    input  wire [ROWS*AW-1:0]     a_data,     // row r at [r*AW +: AW]
    // result: one beat per vector, in order; no back-pressure
    output wire                   o_valid,
    output wire [COLS*PW-1:0]     o_data,     // column c at [c*PW +: PW], signed
    output wire                   busy        // a vector is in flight
);
    localparam integer RB = $clog2(ROWS > 1 ? ROWS : 2);  // w_row width
    localparam integer PB = WW > 1 ? $clog2(WW) : 1;      // plane index width
    localparam integer XS = AW + $clog2(ROWS);            // bits of an exact plane sum
    localparam integer SW = XS < PW ? XS : PW;            // plane sums, modulo 2^PW

    // ---- sequencer: one beat per plane ----
    wire               w_take = w_valid && w_ready;
    wire               seq_ready, b_valid, b_first, b_last, b_neg;
    wire [ROWS*AW-1:0] b_a;
    wire [PB-1:0]      b_plane;
    assign a_ready = seq_ready && !w_valid;
    te_bitserial_seq #(.ROWS(ROWS), .AW(AW), .WW(WW)) u_seq (
        .clk(clk), .rst(rst), .w_take(w_take), .w_bits(w_bits), .w_plane_mask(w_plane_mask),
        .a_take(a_valid && a_ready), .a_ready(seq_ready), .a_data(a_data),
        .b_valid(b_valid), .b_a(b_a), .b_plane(b_plane), .b_first(b_first),
        .b_last(b_last), .b_neg(b_neg));

    reg done;                                 // the accumulators hold a finished vector
    always @(posedge clk) done <= !rst && b_valid && b_last;
    assign o_valid = done;
    assign busy    = b_valid || done;
    assign w_ready = !busy;

    // ---- datapath ----
    wire [ROWS-1:0] w_load;
    genvar r, c;
    generate
        for (r = 0; r < ROWS; r = r + 1) begin : g_load
            assign w_load[r] = w_take && w_row == RB'(r);
        end
        for (c = 0; c < COLS; c = c + 1) begin : g_col
            wire [SW-1:0] sum;
            te_dot_bitserial #(.ROWS(ROWS), .AW(AW), .WW(WW), .SW(SW), .PB(PB)) u_dot (
                .clk(clk), .w_load(w_load), .w_in(w_data[c*WW +: WW]), .plane(b_plane),
                .a(b_a), .sum(sum));
            te_shift_acc #(.SW(SW), .W(PW), .PB(PB)) u_acc (
                .clk(clk), .x(sum), .plane(b_plane), .first(b_first), .neg(b_neg),
                .acc(o_data[c*PW +: PW]));
        end
    endgenerate
endmodule
`default_nettype wire
