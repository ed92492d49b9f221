// te_array_systolic_booth: weight-stationary systolic array of Booth carry-save PEs.
//
// Interface: /work/wt/ARRAY_CONTRACT.md (module name te_array_<engine>_<pe>). PE[r][c]
// (te_pe_booth) holds the radix-4 Booth digits of w[r][c], encoded once at load by one
// encoder per column (te_booth_enc, shared by every row). The partial sum moves down each
// column as a carry-save pair (sum, carry): no carry-propagate adder in any PE, one per
// column at the bottom (the tensor-processing-engine paper's bit-weight transformation for
// systolic arrays). The top of each column starts at the products' constant part
// (te_booth_const), so the PEs add only their rows. o[c] = sum_r a[r] * w[r][c], exact.
//
// Timing, as te_array_systolic_mac, for a vector accepted at cycle t (a_valid & a_ready):
// t+1 input register; t+1+r+c a[r] at PE[r][c]; t+1+ROWS+c column c's pair leaves the
// bottom row and is added (combinationally), then deskewed by COLS-1-c; t+ROWS+COLS o_valid.
// Latency = ROWS + COLS cycles; interval 1 cycle.
// Weights: w_valid & w_ready writes row w_row of the tile; w_ready = !busy (drained), and
// a_ready = !w_valid, so a vector never meets a half-written tile in the same cycle.
`default_nettype none
module te_array_systolic_booth #(
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
    localparam integer ND  = (WW + 1) / 2;    // Booth digits per weight
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
    wire [PW-1:0]      top;                   // the column's constant: ROWS products' K
    always @(posedge clk) a_q <= a_data;
    te_booth_const #(.AW(AW), .ND(ND), .W(PW), .COUNT(ROWS)) u_const (.k(top));

    wire [AW-1:0]   a_h [0:ROWS-1][0:COLS];   // activation entering PE[r][c]
    wire [PW-1:0]   s_v [0:ROWS][0:COLS-1];   // carry-save pair entering PE[r][c]
    wire [PW-1:0]   c_v [0:ROWS][0:COLS-1];
    wire [3*ND-1:0] digits [0:COLS-1];        // the loading row's digits, per column

    genvar r, c;
    generate
        for (r = 0; r < ROWS; r = r + 1) begin : g_skew
            te_delay #(.W(AW), .D(r)) u_skew (.clk(clk), .d(a_q[r*AW +: AW]), .q(a_h[r][0]));
        end
        for (c = 0; c < COLS; c = c + 1) begin : g_col
            te_booth_enc #(.WW(WW)) u_enc (.w(w_data[c*WW +: WW]), .digits(digits[c]));
            assign s_v[0][c] = top;
            assign c_v[0][c] = {PW{1'b0}};
            for (r = 0; r < ROWS; r = r + 1) begin : g_pe
                te_pe_booth #(.AW(AW), .ND(ND), .PW(PW)) u_pe (
                    .clk(clk),
                    .w_load(w_valid && w_ready && w_row == RB'(r)), .d_in(digits[c]),
                    .a_in(a_h[r][c]), .a_out(a_h[r][c+1]),
                    .s_in(s_v[r][c]), .c_in(c_v[r][c]),
                    .s_out(s_v[r+1][c]), .c_out(c_v[r+1][c]));
            end
            // the column's one carry-propagate adder
            te_delay #(.W(PW), .D(COLS-1-c)) u_deskew (
                .clk(clk), .d(s_v[ROWS][c] + c_v[ROWS][c]), .q(o_data[c*PW +: PW]));
        end
    endgenerate
endmodule
`default_nettype wire
