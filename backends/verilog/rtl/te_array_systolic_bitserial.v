// te_array_systolic_bitserial: weight-stationary systolic array of bit-serial PEs.
//
// Interface: /work/wt/ARRAY_CONTRACT.md (module name te_array_<engine>_<pe>). PE[r][c]
// (te_pe_bitserial) holds w[r][c]. A vector is run once per weight bit plane to process
// (te_bitserial_seq: the planes of w_plane_mask below w_bits, all-zero planes skipped):
// the activations flow right as in te_array_systolic_mac, the plane index travels with
// them along the diagonal (PE[r][c] works on the beat issued r+c cycles ago), each column
// sums a[r] * bit_p(w[r][c]) downwards, and a shift-accumulator under each column
// (te_shift_acc) adds the plane sums weighted by +-2^p (the sign plane negative).
// o[c] = sum_r a[r] * w[r][c], exact for weights of w_bits bits two's complement.
//
// Timing, for a vector accepted at cycle t with P = max(1, planes to process) beats:
// its beats are issued at t+1 .. t+P; beat e's a[r] is at PE[r][c] at e+r+c; column c's
// plane sum leaves the bottom at e+ROWS+c and is accumulated; after the last beat the
// column's result is deskewed by COLS-1-c; o_valid at t+P+ROWS+COLS.
// Latency = ROWS + COLS + P cycles; interval P cycles (a_ready once per P cycles).
// Weights: w_valid & w_ready writes row w_row of the tile and takes w_bits and
// w_plane_mask for the tile; w_ready = !busy (drained), a_ready needs !w_valid.
`default_nettype none
module te_array_systolic_bitserial #(
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
    localparam integer D  = ROWS + COLS;                  // diagonal stages
    localparam integer BW = PB + 4;                       // beat: plane, first, neg, last, valid

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

    // ---- the beat's diagonal: diag[d] is the beat issued d cycles ago ----
    wire [BW-1:0] diag [0:D];
    reg  [BW-1:0] dreg [1:D];
    assign diag[0] = {b_plane, b_first, b_neg, b_last, b_valid};
    integer k;
    always @(posedge clk) begin
        for (k = 1; k <= D; k = k + 1) dreg[k] <= diag[k-1];
        if (rst) for (k = 1; k <= D; k = k + 1) dreg[k][1:0] <= 2'b00;
    end
    genvar d;
    generate
        for (d = 1; d <= D; d = d + 1) begin : g_diag
            assign diag[d] = dreg[d];
        end
    endgenerate

    reg busy_q;                               // any valid beat on the diagonal
    always @* begin
        busy_q = 1'b0;
        for (k = 1; k <= D; k = k + 1) busy_q = busy_q | dreg[k][0];
    end
    assign busy    = b_valid || busy_q;
    assign w_ready = !busy;
    assign o_valid = diag[D][1] && diag[D][0];   // the last beat, through the array

    // ---- datapath ----
    wire [AW-1:0] a_h [0:ROWS-1][0:COLS];     // activation entering PE[r][c]
    wire [SW-1:0] p_v [0:ROWS][0:COLS-1];     // plane partial sum entering PE[r][c]

    genvar r, c;
    generate
        for (r = 0; r < ROWS; r = r + 1) begin : g_skew
            te_delay #(.W(AW), .D(r)) u_skew (.clk(clk), .d(b_a[r*AW +: AW]), .q(a_h[r][0]));
        end
        for (c = 0; c < COLS; c = c + 1) begin : g_col
            wire [PW-1:0] acc;
            assign p_v[0][c] = {SW{1'b0}};
            for (r = 0; r < ROWS; r = r + 1) begin : g_pe
                te_pe_bitserial #(.AW(AW), .WW(WW), .SW(SW), .PB(PB)) u_pe (
                    .clk(clk),
                    .w_load(w_take && w_row == RB'(r)), .w_in(w_data[c*WW +: WW]),
                    .plane(diag[r + c][BW-1 -: PB]),
                    .a_in(a_h[r][c]), .a_out(a_h[r][c+1]),
                    .p_in(p_v[r][c]), .p_out(p_v[r+1][c]));
            end
            te_shift_acc #(.SW(SW), .W(PW), .PB(PB)) u_acc (
                .clk(clk), .x(p_v[ROWS][c]), .plane(diag[ROWS + c][BW-1 -: PB]),
                .first(diag[ROWS + c][3]), .neg(diag[ROWS + c][2]), .acc(acc));
            te_delay #(.W(PW), .D(COLS-1-c)) u_deskew (
                .clk(clk), .d(acc), .q(o_data[c*PW +: PW]));
        end
    endgenerate
endmodule
`default_nettype wire
