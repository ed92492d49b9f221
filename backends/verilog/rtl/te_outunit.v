// te_outunit: the tensor engine's output unit. COLS lanes in parallel, one beat per cycle,
// turning accumulator sums (or pooled values) into stored int8/uint8 activations:
//
//   s1  y = REQ_EN ? requant(v, m0[c], sh[c], ZP, QMIN, QMAX) : clamp(v, QMIN, QMAX)
//   s2  table read: TAB_BASE + (y as an unsigned byte index)          (HAS_TABLE)
//   s3  y = TAB_EN ? table[...] : y;  QAdd inputs, TFLite's integer add (etch.QAdd):
//         ra = requant(y - QA_ZERO, QA_M0, QA_SHIFT, 0, INT32_MIN, INT32_MAX)
//         rb = requant(r - QB_ZERO, QB_M0, QB_SHIFT, 0, INT32_MIN, INT32_MAX)  (HAS_QADD)
//   s4  y = QADD_EN ? requant(ra + rb, QO_M0, QO_SHIFT, QO_ZP, QO_MIN, QO_MAX) : y;
//       y = clamp(y, CL_LO, CL_HI)
//   s5  write the lanes into the activation word `dst`, lane slice `dsel`
//
// r is the residual: lane c of word dst + RES_DELTA, read at s0 from the activation
// memory's second port. QA_SHIFT/QB_SHIFT are etch.QAdd's a_shift/b_shift minus its
// left_shift (requant(x << L, m, s) == requant(x, m, s - L) exactly when s > L; the
// compiler checks it). Per-channel m0/sh come from the parameter memory (+etch_req), one
// word of COLS lanes per parameter index. Latency: 5 cycles from in_valid to the write.
`default_nettype none
module te_outunit #(
    parameter integer COLS      = 8,
    parameter integer LANES     = 8,    // bytes per activation word (a multiple of COLS)
    parameter integer ACCW      = 24,   // accumulator width, signed
    parameter integer SW        = 6,    // shift width
    parameter integer ABITS     = 10,   // activation memory address bits
    parameter integer PDEPTH    = 4,    // parameter words
    parameter integer NTAB      = 0,    // 256-entry tables (0: no table hardware)
    parameter integer HAS_QADD  = 0     // residual-add hardware present
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
    localparam integer MW    = 31;                 // M0 width
    localparam integer OW    = 10;                 // int8 or uint8 values, signed
    localparam integer PBITS = PDEPTH > 1 ? $clog2(PDEPTH) : 1;
    localparam integer NSEL  = LANES / COLS;
    localparam integer DSW   = NSEL > 1 ? $clog2(NSEL) : 1;
    localparam integer TDEP  = (NTAB > 0 ? NTAB : 1) * 256;
    localparam integer TBITS = $clog2(TDEP);
    localparam integer PRW   = MW + SW;            // one lane of the parameter word

    // ---- pipeline registers ----------------------------------------------------------
    reg v1, v2, v3, v4, v5;
    reg [COLS*ACCW-1:0] val1;
    reg [ABITS-1:0] dst1, dst2, dst3, dst4, dst5;
    reg [DSW-1:0] sel1, sel2, sel3, sel4, sel5;
    reg [COLS*OW-1:0] y2, y3, y4, y5;
    reg [COLS*8-1:0] r2, r3;
    reg [COLS*32-1:0] ra4, rb4;

    // ---- s0: parameter and residual reads ---------------------------------------------
    wire [COLS*PRW-1:0] prm;
    te_ram #(.WIDTH(COLS*PRW), .DEPTH(PDEPTH), .INIT("etch_req")) params (
        .clk(clk), .re(in_valid), .raddr(in_param), .rdata(prm),
        .wlane(1'b0), .waddr({PBITS{1'b0}}), .wdata({COLS*PRW{1'b0}}));
    assign res_re = in_valid && qadd_en;
    assign res_addr = in_dst + res_delta;

    // ---- s1: requantise ---------------------------------------------------------------
    wire [COLS*OW-1:0] yq;
    genvar c;
    generate
        for (c = 0; c < COLS; c = c + 1) begin : lane
            wire signed [ACCW-1:0] v = val1[c*ACCW +: ACCW];
            wire signed [OW-1:0] req_y;
            te_requant #(.IW(ACCW), .MW(MW), .SW(SW), .OW(OW)) req (
                .x(v), .m0(prm[c*PRW +: MW]), .sh(prm[c*PRW + MW +: SW]),
                .zp(zp), .lo(qmin), .hi(qmax), .y(req_y));
            wire signed [ACCW-1:0] lo_w = {{(ACCW-OW){qmin[OW-1]}}, qmin};
            wire signed [ACCW-1:0] hi_w = {{(ACCW-OW){qmax[OW-1]}}, qmax};
            wire signed [OW-1:0] clip_y = (v < lo_w) ? qmin : (v > hi_w) ? qmax : v[OW-1:0];
            assign yq[c*OW +: OW] = req_en ? req_y : clip_y;
        end
    endgenerate

    // ---- s2/s3: table ------------------------------------------------------------------
    wire [COLS*OW-1:0] yt;
    generate
        if (NTAB > 0) begin : tables
            for (c = 0; c < COLS; c = c + 1) begin : lane
                wire [7:0] idx = y2[c*OW +: 8] ^ {tab_in_signed, 7'b0};
                wire [7:0] entry;
                te_ram #(.WIDTH(8), .DEPTH(TDEP), .INIT("etch_tab")) rom (
                    .clk(clk), .re(v2), .raddr(tab_base + {{(TBITS-8){1'b0}}, idx}),
                    .rdata(entry), .wlane(1'b0), .waddr({TBITS{1'b0}}), .wdata(8'b0));
                wire [OW-1:0] ext = {{(OW-8){tab_out_signed & entry[7]}}, entry};
                assign yt[c*OW +: OW] = tab_en ? ext : y3[c*OW +: OW];
            end
        end else begin : no_tables
            assign yt = y3;
            wire unused = &{1'b0, tab_en, tab_base, tab_in_signed, tab_out_signed};
        end
    endgenerate

    // ---- s3/s4: residual QAdd and the final clamp -------------------------------------
    wire [COLS*OW-1:0] yo;
    wire [COLS*32-1:0] ra, rb;
    generate
        if (HAS_QADD != 0) begin : qadd
            for (c = 0; c < COLS; c = c + 1) begin : lane
                wire signed [OW:0] xa = $signed({yt[c*OW+OW-1], yt[c*OW +: OW]})
                                      - $signed({qa_zero[OW-1], qa_zero});
                wire signed [OW:0] xb = $signed({{(OW-7){res_signed & r3[c*8+7]}},
                                                 r3[c*8 +: 8]})
                                      - $signed({qb_zero[OW-1], qb_zero});
                te_requant #(.IW(OW + 1), .MW(MW), .SW(SW), .OW(32)) side_a (
                    .x(xa), .m0(qa_m0), .sh(qa_shift), .zp(32'sd0),
                    .lo(32'sh80000000), .hi(32'sh7fffffff), .y(ra[c*32 +: 32]));
                te_requant #(.IW(OW + 1), .MW(MW), .SW(SW), .OW(32)) side_b (
                    .x(xb), .m0(qb_m0), .sh(qb_shift), .zp(32'sd0),
                    .lo(32'sh80000000), .hi(32'sh7fffffff), .y(rb[c*32 +: 32]));
                wire signed [32:0] sum = $signed({ra4[c*32+31], ra4[c*32 +: 32]})
                                       + $signed({rb4[c*32+31], rb4[c*32 +: 32]});
                wire signed [OW-1:0] add_y;
                te_requant #(.IW(33), .MW(MW), .SW(SW), .OW(OW)) out (
                    .x(sum), .m0(qo_m0), .sh(qo_shift), .zp(qo_zp), .lo(qo_min),
                    .hi(qo_max), .y(add_y));
                wire signed [OW-1:0] pre = qadd_en ? add_y : $signed(y4[c*OW +: OW]);
                assign yo[c*OW +: OW] = (pre < cl_lo) ? cl_lo : (pre > cl_hi) ? cl_hi : pre;
            end
        end else begin : no_qadd
            for (c = 0; c < COLS; c = c + 1) begin : lane
                wire signed [OW-1:0] pre = $signed(y4[c*OW +: OW]);
                assign yo[c*OW +: OW] = (pre < cl_lo) ? cl_lo : (pre > cl_hi) ? cl_hi : pre;
            end
            assign ra = {COLS*32{1'b0}};
            assign rb = {COLS*32{1'b0}};
            wire unused = &{1'b0, qadd_en, res_signed, qa_zero, qb_zero, qa_m0, qb_m0, qo_m0,
                            qa_shift, qb_shift, qo_shift, qo_zp, qo_min, qo_max, r3, ra4, rb4};
        end
    endgenerate

    // ---- the pipeline -----------------------------------------------------------------
    integer k;
    always @(posedge clk) begin
        if (rst) begin
            {v1, v2, v3, v4, v5} <= 5'b0;
        end else begin
            {v1, v2, v3, v4, v5} <= {in_valid, v1, v2, v3, v4};
        end
        val1 <= in_val;
        {dst1, dst2, dst3, dst4, dst5} <= {in_dst, dst1, dst2, dst3, dst4};
        {sel1, sel2, sel3, sel4, sel5} <= {in_dsel, sel1, sel2, sel3, sel4};
        y2 <= yq;
        y3 <= y2;
        y4 <= yt;
        y5 <= yo;
        for (k = 0; k < COLS; k = k + 1) r2[k*8 +: 8] <= res_data[(sel1*COLS + k)*8 +: 8];
        r3 <= r2;
        ra4 <= ra;
        rb4 <= rb;
    end

    // ---- s5: write ---------------------------------------------------------------------
    assign wr_lanes = v5 ? ({{(LANES-COLS){1'b0}}, {COLS{1'b1}}} << (sel5 * COLS))
                         : {LANES{1'b0}};
    assign wr_addr = dst5;
    assign wr_data = {NSEL{pack(y5)}};
    assign busy = v1 | v2 | v3 | v4 | v5;

    function automatic [COLS*8-1:0] pack(input [COLS*OW-1:0] y);
        integer j;
        for (j = 0; j < COLS; j = j + 1) pack[j*8 +: 8] = y[j*OW +: 8];
    endfunction
endmodule
`default_nettype wire
