// te_outunit: the tensor engine's output unit. COLS lanes in parallel, one beat per cycle,
// turning accumulator sums (or pooled values) into stored int8/uint8 activations:
//
//   s1-s2  y = REQ_EN ? requant(v, m0[c], sh[c], ZP, QMIN, QMAX) : clamp(v, QMIN, QMAX)
//   s3     table read: TAB_BASE + (y as an unsigned byte index)          (HAS_TABLE)
//   s4-s5  y = TAB_EN ? table[...] : y;  QAdd inputs, TFLite's integer add (etch.QAdd):
//            ra = requant(y - QA_ZERO, QA_M0, QA_SHIFT, 0, INT32_MIN, INT32_MAX)
//            rb = requant(r - QB_ZERO, QB_M0, QB_SHIFT, 0, INT32_MIN, INT32_MAX)  (HAS_QADD)
//   s6-s7  y = QADD_EN ? requant(ra + rb, QO_M0, QO_SHIFT, QO_ZP, QO_MIN, QO_MAX) : y;
//          y = clamp(y, CL_LO, CL_HI)
//   s8     write the lanes into the activation word `dst`, lane slice `dsel`
//
// Each requantiser takes two stages (te_requant registers its product). r is the residual:
// lane c of word dst + RES_DELTA, read at s0 from the activation memory's second port.
// QA_SHIFT/QB_SHIFT are etch.QAdd's a_shift/b_shift minus its left_shift
// (requant(x << L, m, s) == requant(x, m, s - L) exactly when s > L; the compiler checks
// it). Per-channel m0/sh come from the parameter memory (+etch_req), one word of COLS lanes
// per parameter index. Latency: 8 cycles from in_valid to the write.
`default_nettype none
module te_outunit #(
    parameter integer COLS      = 8,
    parameter integer LANES     = 8,    // bytes per activation word (a multiple of COLS)
    parameter integer ACCW      = 24,   // accumulator width, signed
    parameter integer SW        = 6,    // shift width
    parameter integer ABITS     = 10,   // activation memory address bits
    parameter integer PDEPTH    = 4,    // parameter words
    parameter integer NTAB      = 0,    // 256-entry tables (0: no table hardware)
    parameter integer HAS_QADD  = 0,    // residual-add hardware present
    // derived (not to be overridden): M0 and value widths, parameter-index, lane-slice and
    // table-address bits
    parameter integer MW    = 31,
    parameter integer OW    = 10,       // int8 or uint8 values, signed
    parameter integer PBITS = PDEPTH > 1 ? $clog2(PDEPTH) : 1,
    parameter integer DSW   = LANES / COLS > 1 ? $clog2(LANES / COLS) : 1,
    parameter integer TBITS = $clog2((NTAB > 0 ? NTAB : 1) * 256)
) (
    input  wire                         clk,
    input  wire                         rst,
    // one beat of COLS values
    input  wire                         in_valid,
    input  wire [COLS*ACCW-1:0]         in_val,     // lane c at [c*ACCW +: ACCW], signed
    input  wire [PBITS-1:0]             in_param,   // parameter word of the lanes
    input  wire [ABITS-1:0]             in_dst,     // activation word written
    input  wire [DSW-1:0]               in_dsel,    // lane slice: lanes dsel*COLS ..
    // layer configuration (CSRs), stable while beats flow
    input  wire                         req_en,
    input  wire signed [OW-1:0]         zp, qmin, qmax,
    input  wire                         tab_en,
    input  wire [TBITS-1:0]             tab_base,
    input  wire                         tab_in_signed, tab_out_signed,
    input  wire                         qadd_en,
    input  wire [ABITS-1:0]             res_delta,  // residual word - dst (mod 2^ABITS)
    input  wire                         res_signed,
    input  wire signed [OW-1:0]         qa_zero, qb_zero,
    input  wire [MW-1:0]                qa_m0, qb_m0, qo_m0,
    input  wire [SW-1:0]                qa_shift, qb_shift, qo_shift,
    input  wire signed [OW-1:0]         qo_zp, qo_min, qo_max, cl_lo, cl_hi,
    // residual read (activation memory port B, registered: data one cycle later)
    output wire                         res_re,
    output wire [ABITS-1:0]             res_addr,
    input  wire [LANES*8-1:0]           res_data,
    // activation memory write
    output wire [LANES-1:0]             wr_lanes,
    output wire [ABITS-1:0]             wr_addr,
    output wire [LANES*8-1:0]           wr_data,
    output wire                         busy
);
    localparam integer NSEL  = LANES / COLS;
    localparam integer TDEP  = (NTAB > 0 ? NTAB : 1) * 256;
    localparam integer PRW   = MW + SW;            // one lane of the parameter word
    localparam integer D     = 8;                  // pipeline depth

    // ---- pipeline registers: stage k holds the beat that entered k cycles ago -----------
    reg [D:1] v;
    reg [ABITS-1:0] dst [1:D];
    reg [DSW-1:0] sel [1:D];
    reg [COLS*ACCW-1:0] val1;
    reg req1;
    reg [COLS*OW-1:0] clip2, y3, y4, yt5, yt6, yt7, y8;
    reg [COLS*8-1:0] r2, r3, r4;

    // ---- s0: parameter and residual reads ---------------------------------------------
    wire [COLS*PRW-1:0] prm;
    te_ram #(.WIDTH(COLS*PRW), .DEPTH(PDEPTH), .INIT("etch_req")) params (
        .clk(clk), .re(in_valid), .raddr(in_param), .rdata(prm),
        .wlane(1'b0), .waddr({PBITS{1'b0}}), .wdata({COLS*PRW{1'b0}}));
    assign res_re = in_valid && qadd_en;
    assign res_addr = in_dst + res_delta;

    // ---- s1-s2: requantise (or clamp) -------------------------------------------------
    wire [COLS*OW-1:0] req_y, clip_y;
    genvar c;
    generate
        for (c = 0; c < COLS; c = c + 1) begin : lane
            wire signed [ACCW-1:0] x = val1[c*ACCW +: ACCW];
            te_requant #(.IW(ACCW), .MW(MW), .SW(SW), .OW(OW)) req (
                .clk(clk), .x(x), .m0(prm[c*PRW +: MW]), .sh(prm[c*PRW + MW +: SW]),
                .zp(zp), .lo(qmin), .hi(qmax), .y(req_y[c*OW +: OW]));
            wire signed [ACCW-1:0] lo_w = {{(ACCW-OW){qmin[OW-1]}}, qmin};
            wire signed [ACCW-1:0] hi_w = {{(ACCW-OW){qmax[OW-1]}}, qmax};
            assign clip_y[c*OW +: OW] = (x < lo_w) ? qmin : (x > hi_w) ? qmax : x[OW-1:0];
        end
    endgenerate

    // ---- s3-s4: table ------------------------------------------------------------------
    wire [COLS*OW-1:0] yt;
    generate
        if (NTAB > 0) begin : tables
            for (c = 0; c < COLS; c = c + 1) begin : lane
                wire [7:0] idx = y3[c*OW +: 8] ^ {tab_in_signed, 7'b0};
                wire [7:0] entry;
                te_ram #(.WIDTH(8), .DEPTH(TDEP), .INIT("etch_tab")) rom (
                    .clk(clk), .re(v[3]), .raddr(tab_base + {{(TBITS-8){1'b0}}, idx}),
                    .rdata(entry), .wlane(1'b0), .waddr({TBITS{1'b0}}), .wdata(8'b0));
                wire [OW-1:0] ext = {{(OW-8){tab_out_signed & entry[7]}}, entry};
                assign yt[c*OW +: OW] = tab_en ? ext : y4[c*OW +: OW];
            end
        end else begin : no_tables
            assign yt = y4;
            wire unused = &{1'b0, tab_en, tab_base, tab_in_signed, tab_out_signed};
        end
    endgenerate

    // ---- s4-s7: residual QAdd and the final clamp -------------------------------------
    wire [COLS*OW-1:0] yo;
    generate
        if (HAS_QADD != 0) begin : qadd
            for (c = 0; c < COLS; c = c + 1) begin : lane
                wire signed [OW:0] xa = $signed({yt[c*OW+OW-1], yt[c*OW +: OW]})
                                      - $signed({qa_zero[OW-1], qa_zero});
                wire signed [OW:0] xb = $signed({{(OW-7){res_signed & r4[c*8+7]}},
                                                 r4[c*8 +: 8]})
                                      - $signed({qb_zero[OW-1], qb_zero});
                wire signed [31:0] ra, rb;
                te_requant #(.IW(OW + 1), .MW(MW), .SW(SW), .OW(32)) side_a (
                    .clk(clk), .x(xa), .m0(qa_m0), .sh(qa_shift), .zp(32'sd0),
                    .lo(32'sh80000000), .hi(32'sh7fffffff), .y(ra));
                te_requant #(.IW(OW + 1), .MW(MW), .SW(SW), .OW(32)) side_b (
                    .clk(clk), .x(xb), .m0(qb_m0), .sh(qb_shift), .zp(32'sd0),
                    .lo(32'sh80000000), .hi(32'sh7fffffff), .y(rb));
                reg signed [32:0] sum6;
                always @(posedge clk) sum6 <= {ra[31], ra} + {rb[31], rb};
                wire signed [OW-1:0] add_y;
                te_requant #(.IW(33), .MW(MW), .SW(SW), .OW(OW)) out (
                    .clk(clk), .x(sum6), .m0(qo_m0), .sh(qo_shift), .zp(qo_zp), .lo(qo_min),
                    .hi(qo_max), .y(add_y));
                wire signed [OW-1:0] pre = qadd_en ? add_y : $signed(yt7[c*OW +: OW]);
                assign yo[c*OW +: OW] = (pre < cl_lo) ? cl_lo : (pre > cl_hi) ? cl_hi : pre;
            end
        end else begin : no_qadd
            for (c = 0; c < COLS; c = c + 1) begin : lane
                wire signed [OW-1:0] pre = $signed(yt7[c*OW +: OW]);
                assign yo[c*OW +: OW] = (pre < cl_lo) ? cl_lo : (pre > cl_hi) ? cl_hi : pre;
            end
            wire unused = &{1'b0, qadd_en, res_signed, qa_zero, qb_zero, qa_m0, qb_m0, qo_m0,
                            qa_shift, qb_shift, qo_shift, qo_zp, qo_min, qo_max, r4};
        end
    endgenerate

    // ---- the pipeline -----------------------------------------------------------------
    integer k;
    always @(posedge clk) begin
        if (rst) v <= {D{1'b0}};
        else v <= {v[D-1:1], in_valid};
        dst[1] <= in_dst;
        sel[1] <= in_dsel;
        for (k = 2; k <= D; k = k + 1) begin
            dst[k] <= dst[k-1];
            sel[k] <= sel[k-1];
        end
        val1 <= in_val;
        req1 <= req_en;
        clip2 <= clip_y;
        y3 <= req1 ? req_y : clip2;
        y4 <= y3;
        yt5 <= yt;
        yt6 <= yt5;
        yt7 <= yt6;
        y8 <= yo;
        for (k = 0; k < COLS; k = k + 1) r2[k*8 +: 8] <= res_data[(sel[1]*COLS + k)*8 +: 8];
        r3 <= r2;
        r4 <= r3;
    end

    // ---- s8: write ---------------------------------------------------------------------
    assign wr_lanes = v[D] ? ({{(LANES-COLS){1'b0}}, {COLS{1'b1}}} << (sel[D] * COLS))
                           : {LANES{1'b0}};
    assign wr_addr = dst[D];
    assign wr_data = {NSEL{pack(y8)}};
    assign busy = |v;

    function automatic [COLS*8-1:0] pack(input [COLS*OW-1:0] y);
        integer j;
        for (j = 0; j < COLS; j = j + 1) pack[j*8 +: 8] = y[j*OW +: 8];
    endfunction
endmodule
`default_nettype wire
