// te_array_systolic_mac: weight-stationary systolic array of `mac` PEs (te_pe_mac).
//
// Interface: /work/wt/ARRAY_CONTRACT.md (module name te_array_<engine>_<pe>). PE[r][c]
// holds w[r][c]; o[c] = sum_r a[r] * w[r][c], exact, one vector per cycle.
//
// Dataflow and timing, for a vector accepted at cycle t (a_valid & a_ready):
//   t+1        a is in the input register;
//   t+1+r+c    a[r] is at PE[r][c] (row r is skewed by r cycles, then moves one PE right
//              per cycle), and the partial sum of rows 0..r-1 arrives from above;
//   t+1+ROWS+c column c's sum leaves the bottom row; column c is deskewed by COLS-1-c
//   t+ROWS+COLS o_valid with the whole vector o.
// Latency (a_valid & a_ready to o_valid) = ROWS + COLS cycles; interval 1 cycle.
// Weights: w_valid & w_ready writes row w_row of the tile; w_ready = !busy (drained), and
// a_ready = !w_valid, so a vector never meets a half-written tile in the same cycle.
`default_nettype none
module te_array_systolic_mac #(
    parameter integer ROWS = 8,               // reduction lanes: one activation per row
    parameter integer COLS = 8,               // output lanes: one weight column per col
    parameter integer AW   = 9,               // activation width, signed
    parameter integer WW   = 8,               // weight width, signed
    parameter integer PW   = AW + WW + $clog2(ROWS)  // partial-sum width (exact bound)
) (
    input  wire                   clk,
    input  wire                   rst,        // synchronous, active high
    // weight tile load: row w_row of the tile per beat
    input  wire                   w_valid,
    input  wire [$clog2(ROWS > 1 ? ROWS : 2)-1:0] w_row,  // >= 1 bit
    input  wire [COLS*WW-1:0]     w_data,     // column c at [c*WW +: WW]
    /* verilator lint_off UNUSEDSIGNAL */     // bit-plane controls are for `bitserial` only
    input  wire [3:0]             w_bits,
    input  wire [7:0]             w_plane_mask,
    /* verilator lint_on UNUSEDSIGNAL */
    output wire                   w_ready,    // the array is drained: may load
    // compute: one activation vector per beat
    input  wire                   a_valid,
    output wire                   a_ready,
    input  wire [ROWS*AW-1:0]     a_data,     // row r at [r*AW +: AW]
    // result: one beat per vector, in order; no back-pressure
    output wire                   o_valid,
    output wire [COLS*PW-1:0]     o_data,     // column c at [c*PW +: PW], signed
    output wire                   busy        // a vector is in flight
);
    localparam integer RB  = $clog2(ROWS > 1 ? ROWS : 2);  // w_row width
    localparam integer LAT = ROWS + COLS;

    // ---- control: a valid bit per pipeline stage ----
    reg [LAT-1:0] vpipe;                      // vpipe[k]: a vector accepted k+1 cycles ago
    wire accept = a_valid && a_ready;
    assign a_ready = !w_valid;
    assign w_ready = !busy;
    assign busy    = |vpipe;
    assign o_valid = vpipe[LAT-1];
    always @(posedge clk) begin
        if (rst) vpipe <= {LAT{1'b0}};
        else     vpipe <= {vpipe[LAT-2:0], accept};
    end

    // ---- datapath ----
    reg  [ROWS*AW-1:0] a_q;                   // input register
    always @(posedge clk) a_q <= a_data;

    wire [AW-1:0] a_h [0:ROWS-1][0:COLS];     // activation entering PE[r][c] (c = COLS: out)
    wire [PW-1:0] p_v [0:ROWS][0:COLS-1];     // partial sum entering PE[r][c] (r = ROWS: out)

    genvar r, c;
    generate
        for (r = 0; r < ROWS; r = r + 1) begin : g_skew
            te_delay #(.W(AW), .D(r)) u_skew (.clk(clk), .d(a_q[r*AW +: AW]), .q(a_h[r][0]));
        end
        for (c = 0; c < COLS; c = c + 1) begin : g_col
            assign p_v[0][c] = {PW{1'b0}};
            for (r = 0; r < ROWS; r = r + 1) begin : g_pe
                te_pe_mac #(.AW(AW), .WW(WW), .PW(PW)) u_pe (
                    .clk(clk),
                    .w_load(w_valid && w_ready && w_row == RB'(r)),
                    .w_in(w_data[c*WW +: WW]),
                    .a_in(a_h[r][c]), .a_out(a_h[r][c+1]),
                    .p_in(p_v[r][c]), .p_out(p_v[r+1][c]));
            end
            te_delay #(.W(PW), .D(COLS-1-c)) u_deskew (
                .clk(clk), .d(p_v[ROWS][c]), .q(o_data[c*PW +: PW]));
        end
    endgenerate
endmodule
`default_nettype wire
