// te_feed: the activation feeder. For one pass it walks `count` output pixels of a
// convolution in row-major order, reading for each the activation word at
//
//     address = row + ix,   row = row0 + oy_rel * ROW_STEP,  ix = ix0 + ox * SX,
//     iy = iy0 + oy_rel * SY          (ROW_STEP = SY * SRC_W, OW pixels per row)
//
// and hands the array the ROWS-lane slice `sub` of the word, centred: a - A_ZERO (AW bits,
// signed), or 0 where (iy, ix) falls outside the SRC_H x SRC_W input (padding is the real
// zero). A GEMM is the 1x1 case over SRC_H = M rows of width 1. The words hold LANES bytes
// (int8, or uint8 when A_SIGNED is 0).
//
// Pipeline: address generator -> memory (registered read) -> a_data. The whole pipeline
// holds when the array does not take a vector (the memory keeps its output while its read
// enable is low), so there is no skid buffer. `gate` keeps a_valid low until the weight
// tile is loaded; the feeder may start earlier and has its first vector ready.
`default_nettype none
module te_feed #(
    parameter integer ROWS  = 8,
    parameter integer LANES = 8,    // bytes per activation word (a multiple of ROWS)
    parameter integer AW    = 9,    // centred activation width, signed
    parameter integer ABITS = 10,   // activation memory address bits
    parameter integer XA    = 24,   // signed address arithmetic width (row0)
    parameter integer GW    = 16,   // geometry width (coordinates, sizes), signed
    parameter integer CNTW  = 16,   // vector count width
    parameter integer SUBW  = 4     // lane-slice select width
) (
    input  wire                     clk,
    input  wire                     rst,
    // the pass
    input  wire                     start,
    input  wire signed [XA-1:0]     row0,
    input  wire signed [GW-1:0]     iy0,
    input  wire signed [GW-1:0]     ix0,
    input  wire [CNTW-1:0]          count,
    input  wire [SUBW-1:0]          sub,
    // layer geometry (CSRs)
    input  wire signed [GW-1:0]     src_h,
    input  wire signed [GW-1:0]     src_w,
    input  wire signed [XA-1:0]     row_step,
    input  wire signed [GW-1:0]     sx,
    input  wire signed [GW-1:0]     sy,
    input  wire [GW-1:0]            ow,
    input  wire signed [AW:0]       a_zero,
    input  wire                     a_signed,
    // activation memory read port
    output wire                     re,
    output wire [ABITS-1:0]         raddr,
    input  wire [LANES*8-1:0]       rdata,
    // to the array
    input  wire                     gate,
    input  wire                     a_ready,
    output wire                     a_valid,
    output reg  [ROWS*AW-1:0]       a_data,
    output wire                     done,    // the last vector of the pass is taken
    output wire                     idle
);
    reg active, v1, pad1, last1;
    reg [CNTW-1:0] cnt;
    reg [GW-1:0] ox;
    reg signed [GW-1:0] iy, ix, ix_start;
    reg signed [XA-1:0] row;
    reg [SUBW-1:0] sub_q;

    wire advance = !v1 || (gate && a_ready);
    // only the low ABITS reach the memory: out-of-range addresses are padding (`pad`)
    /* verilator lint_off UNUSEDSIGNAL */
    wire signed [XA-1:0] addr = row + {{(XA-GW){ix[GW-1]}}, ix};
    /* verilator lint_on UNUSEDSIGNAL */
    wire pad = iy[GW-1] || iy >= src_h || ix[GW-1] || ix >= src_w;
    wire row_end = ox == ow - 1'b1;

    assign re = advance && active;
    assign raddr = pad ? {ABITS{1'b0}} : addr[ABITS-1:0];
    assign a_valid = v1 && gate;
    assign done = a_valid && a_ready && last1;
    assign idle = !active && !v1;

    always @(posedge clk) begin
        if (rst) begin
            active <= 1'b0;
            v1 <= 1'b0;
        end else if (start) begin
            active <= 1'b1;
            v1 <= 1'b0;
        end else if (advance) begin
            v1 <= active;
            if (active && cnt == 1) active <= 1'b0;
        end
        if (start) begin
            cnt <= count;
            ox <= {GW{1'b0}};
            iy <= iy0;
            ix <= ix0;
            ix_start <= ix0;
            row <= row0;
            sub_q <= sub;
        end else if (advance && active) begin
            pad1 <= pad;
            last1 <= cnt == 1;
            cnt <= cnt - 1'b1;
            if (row_end) begin
                ox <= {GW{1'b0}};
                ix <= ix_start;
                iy <= iy + sy;
                row <= row + row_step;
            end else begin
                ox <= ox + 1'b1;
                ix <= ix + sx;
            end
        end
    end

    // centred lanes of the selected slice
    integer r;
    reg [7:0] byte_r;
    /* verilator lint_off UNUSEDSIGNAL */
    reg [AW:0] centred;  // |a - A_ZERO| <= 255: AW bits hold it; AW + 1 to compute it
    /* verilator lint_on UNUSEDSIGNAL */
    always @* begin
        a_data = {ROWS*AW{1'b0}};
        byte_r = 8'b0;
        centred = {(AW+1){1'b0}};
        for (r = 0; r < ROWS; r = r + 1) begin
            byte_r = rdata[(sub_q * ROWS + r) * 8 +: 8];
            centred = {{(AW-7){a_signed & byte_r[7]}}, byte_r} - a_zero;
            if (!pad1) a_data[r*AW +: AW] = centred[AW-1:0];
        end
    end
endmodule
`default_nettype wire
