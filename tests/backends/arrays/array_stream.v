// array_stream: drives compute arrays from the stream harness (tests only).
//
// Up to six arrays of one shape share the design, one per slot: build with
// -DARRAY0=<module> ... -DARRAY5=<module> (slots left undefined are empty), so a single
// simulator build serves every array kind. A program drives one slot.
// Input beat (bits): [1:0] op (0 idle for a cycle, 1 weight row, 2 activation vector),
// [4:2] slot, [12:5] w_row, [16:13] w_bits, [24:17] w_plane_mask, [25 +: PAY] w_data or
// a_data. A weight beat waits for w_ready, an activation beat for a_ready and for room in
// the output FIFO (credits), so back-pressure from the harness never drops a result.
// Output beat, one per vector, in order: [31:0] cycle the vector was accepted,
// [63:32] cycle o_valid rose, [64] sticky: busy disagreed with "a vector is in flight" on
// some cycle so far, [72 +: COLS*PW] o_data. Cycles count from reset.
`default_nettype none
`define SLOT(K, NAME) \
    NAME #(.ROWS(ROWS), .COLS(COLS), .AW(AW), .WW(WW), .PW(PW)) u_slot``K ( \
        .clk(clk), .rst(rst), \
        .w_valid(w_valid && slot == 3'd``K), .w_row(in_data[5 +: RB]), \
        .w_data(in_data[25 +: COLS*WW]), .w_bits(in_data[13 +: 4]), \
        .w_plane_mask(in_data[17 +: 8]), .w_ready(w_ready[K]), \
        .a_valid(a_valid && slot == 3'd``K), .a_ready(a_ready[K]), \
        .a_data(in_data[25 +: ROWS*AW]), \
        .o_valid(o_valid[K]), .o_data(o_data[K]), .busy(busy[K]));
`define EMPTY(K) \
    assign w_ready[K] = 1'b0; assign a_ready[K] = 1'b0; assign o_valid[K] = 1'b0; \
    assign o_data[K] = {(COLS*PW){1'b0}}; assign busy[K] = 1'b0;
module array_stream #(
    parameter integer ROWS = 4,
    parameter integer COLS = 4,
    parameter integer AW   = 9,
    parameter integer WW   = 8,
    parameter integer PW   = 19,
    parameter integer IN_BEAT  = (25 + (ROWS*AW > COLS*WW ? ROWS*AW : COLS*WW) + 7) / 8,
    parameter integer OUT_BEAT = (72 + COLS*PW + 7) / 8
) (
    input  wire                  clk,
    input  wire                  rst,
    input  wire                  in_valid,
    output wire                  in_ready,
    input  wire [IN_BEAT*8-1:0]  in_data,
    output wire                  out_valid,
    input  wire                  out_ready,
    output wire [OUT_BEAT*8-1:0] out_data
);
    localparam integer DEPTH = 64;
    localparam integer RB = ROWS > 1 ? $clog2(ROWS) : 1;
    localparam integer OW = 72 + COLS*PW;
    localparam integer OB = OUT_BEAT * 8;

    wire [1:0] op   = in_data[1:0];
    wire [2:0] slot = in_data[4:2];
    wire [5:0] w_ready, a_ready, o_valid, busy;
    wire [COLS*PW-1:0] o_data [0:5];
    wire [6:0] n_stamps, n_outs;
    wire [31:0] stamp;
    wire [OW-1:0] out_head;
    reg  [31:0] now;
    reg  [COLS*PW-1:0] o_any;                 // o_data of the slot with o_valid
    wire credit  = {1'b0, n_stamps} + {1'b0, n_outs} < 8'(DEPTH);
    wire w_valid = in_valid && op == 2'd1;
    wire a_valid = in_valid && op == 2'd2 && credit;
    wire o_fire  = |o_valid;
    assign in_ready  = op == 2'd1 ? w_ready[slot] : op == 2'd2 ? a_ready[slot] && credit : 1'b1;
    assign out_valid = n_outs != 7'd0;
    assign out_data  = OB'(out_head);

    integer k;
    always @* begin
        o_any = {(COLS*PW){1'b0}};
        for (k = 0; k < 6; k = k + 1) if (o_valid[k]) o_any = o_data[k];
    end

    reg busy_err;                             // busy != (a vector is in flight), sticky
    always @(posedge clk) begin
        now      <= rst ? 32'd0 : now + 32'd1;
        busy_err <= !rst && (busy_err || (|busy) != (n_stamps != 7'd0));
    end

`ifdef ARRAY0 `SLOT(0, `ARRAY0) `else `EMPTY(0) `endif
`ifdef ARRAY1 `SLOT(1, `ARRAY1) `else `EMPTY(1) `endif
`ifdef ARRAY2 `SLOT(2, `ARRAY2) `else `EMPTY(2) `endif
`ifdef ARRAY3 `SLOT(3, `ARRAY3) `else `EMPTY(3) `endif
`ifdef ARRAY4 `SLOT(4, `ARRAY4) `else `EMPTY(4) `endif
`ifdef ARRAY5 `SLOT(5, `ARRAY5) `else `EMPTY(5) `endif

    tb_fifo #(.W(32), .DEPTH(DEPTH)) u_stamps (
        .clk(clk), .rst(rst), .push(a_valid && a_ready[slot]), .d(now), .pop(o_fire),
        .head(stamp), .count(n_stamps));
    tb_fifo #(.W(OW), .DEPTH(DEPTH)) u_outs (
        .clk(clk), .rst(rst), .push(o_fire), .d({o_any, 7'd0, busy_err, now, stamp}),
        .pop(out_valid && out_ready), .head(out_head), .count(n_outs));
endmodule
`undef SLOT
`undef EMPTY
`default_nettype wire
