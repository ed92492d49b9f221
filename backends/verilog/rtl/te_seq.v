// te_seq: runs one PASS at a time: loads the weight tile (ROWS rows of COLS weights from
// the weight memory, +etch_wmem) into the array, then lets the feeder stream the pass's
// activation vectors. It accepts the next pass in the cycle the feeder's last vector is
// taken, so back-to-back passes cost only the array's drain (w_ready) and the tile load.
//
// The feeder is started when a pass is accepted and prefetches while the tile loads; its
// vectors are gated until the last weight beat. The accumulator learns the pass's
// attributes on the first weight beat (the array has drained by then).
`default_nettype none
module te_seq #(
    parameter integer ROWS   = 8,
    parameter integer COLS   = 8,
    parameter integer WW     = 8,     // weight width
    parameter integer WDEPTH = 64,    // weight memory rows
    parameter integer XA     = 24,
    parameter integer GW     = 16,
    parameter integer CNTW   = 16,
    parameter integer SUBW   = 4,
    parameter integer PBITS  = 2,
    parameter integer ABITS  = 10,
    parameter integer DSW    = 1,
    // derived (not to be overridden): weight-row and memory address bits
    parameter integer RB     = ROWS > 1 ? $clog2(ROWS) : 1,
    parameter integer MB     = WDEPTH > 1 ? $clog2(WDEPTH) : 1
) (
    input  wire                     clk,
    input  wire                     rst,
    // the next pass (from the controller)
    input  wire                     pv,
    output wire                     pr,
    input  wire                     first, last,
    input  wire [MB-1:0]            wrow,     // first row of the tile
    input  wire [3:0]               wbits,
    input  wire [7:0]               mask,
    input  wire signed [XA-1:0]     row0,
    input  wire signed [GW-1:0]     iy0, ix0,
    input  wire [CNTW-1:0]          count,
    input  wire [SUBW-1:0]          sub,
    input  wire [PBITS-1:0]         param,
    input  wire [ABITS-1:0]         dst,
    input  wire [DSW-1:0]           dsel,
    // the array's weight port
    output wire                     w_valid,
    output wire [RB-1:0]            w_row,
    output wire [COLS*WW-1:0]       w_data,
    output wire [3:0]               w_bits,
    output wire [7:0]               w_plane_mask,
    input  wire                     w_ready,
    // the feeder
    output reg                      f_start,
    output reg  signed [XA-1:0]     f_row0,
    output reg  signed [GW-1:0]     f_iy0, f_ix0,
    output reg  [CNTW-1:0]          f_count,
    output reg  [SUBW-1:0]          f_sub,
    output wire                     f_gate,
    input  wire                     f_done,
    // the accumulator
    output wire                     a_start,
    output reg                      a_first, a_last,
    output reg  [PBITS-1:0]         a_param,
    output reg  [ABITS-1:0]         a_dst,
    output reg  [DSW-1:0]           a_dsel,
    output wire                     idle
);
    localparam [1:0] IDLE = 2'd0, LOAD = 2'd1, STREAM = 2'd2;

    reg [1:0] state;
    reg [RB:0] issued;          // weight rows read so far
    reg rv;                     // w_data holds row `rrow`
    reg [RB-1:0] rrow;
    reg [MB-1:0] wrow_q;
    reg [3:0] wbits_q;
    reg [7:0] mask_q;

    wire advance_w = !rv || w_ready;
    wire rd = state == LOAD && advance_w && issued < (RB+1)'(ROWS);
    wire fire = rv && w_ready;
    wire [MB-1:0] raddr = wrow_q + MB'(issued);

    te_ram #(.WIDTH(COLS*WW), .DEPTH(WDEPTH), .INIT("etch_wmem")) wmem (
        .clk(clk), .re(rd), .raddr(raddr), .rdata(w_data),
        .wlane(1'b0), .waddr({MB{1'b0}}), .wdata({COLS*WW{1'b0}}));

    assign pr = state == IDLE || (state == STREAM && f_done);
    assign w_valid = rv;
    assign w_row = rrow;
    assign w_bits = wbits_q;
    assign w_plane_mask = mask_q;
    assign f_gate = state == STREAM;
    assign a_start = fire && rrow == {RB{1'b0}};
    assign idle = state == IDLE;

    always @(posedge clk) begin
        f_start <= 1'b0;
        if (rst) begin
            state <= IDLE;
            rv <= 1'b0;
        end else begin
            if (pv && pr) begin
                state <= LOAD;
                issued <= {(RB+1){1'b0}};
                rv <= 1'b0;
                f_start <= 1'b1;
            end else if (state == LOAD) begin
                if (advance_w) begin
                    rv <= rd;
                    rrow <= issued[RB-1:0];
                    if (rd) issued <= issued + 1'b1;
                end
                if (fire && rrow == RB'(ROWS - 1)) state <= STREAM;
            end else if (state == STREAM && f_done) begin
                state <= IDLE;
            end
        end
        if (pv && pr) begin
            wrow_q <= wrow;
            wbits_q <= wbits;
            mask_q <= mask;
            f_row0 <= row0;
            f_iy0 <= iy0;
            f_ix0 <= ix0;
            f_count <= count;
            f_sub <= sub;
            a_first <= first;
            a_last <= last;
            a_param <= param;
            a_dst <= dst;
            a_dsel <= dsel;
        end
    end
endmodule
`default_nettype wire
