// te_pool: pooling and elementwise layers. For every channel block cb (P_CB of them, LANES
// channels each) and output pixel (oy, ox) of a P_OH x OW output it reads the P_KH x P_KW
// window of activation words
//
//     iy = oy * SY - P_PADT + ky * P_DY,  ix = ox * SX - P_PADL + kx * P_DX
//     address = P_ROW0 + cb * P_SRC_S + oy * ROW_STEP + ky * P_ROW_DY + ix
//
// (P_ROW0 = base - P_PADT * SRC_W), skipping positions outside SRC_H x SRC_W, and reduces
// each lane: P_MODE sum: sum of (a - A_ZERO) (etch.QSumPool; padding adds 0), max: the
// largest a (MaxPool on int8/uint8; padding never wins). A 1x1 window in max mode is a copy:
// elementwise layers (a standalone Table, Clamp or QAdd) run through here to reach the
// output unit. Each result word leaves as LANES/COLS beats of COLS lanes (lane slice j)
// for output word P_DST + cb * P_DST_S + oy * OW + ox, parameter word P_PARAM.
//
// One window element per cycle; the reads stall only while the previous result is still
// being sent (LANES/COLS > window size).
`default_nettype none
module te_pool #(
    parameter integer COLS  = 8,
    parameter integer LANES = 8,
    parameter integer ACCW  = 24,   // lane width of the sums, signed
    parameter integer ABITS = 10,
    parameter integer XA    = 24,
    parameter integer GW    = 16,
    parameter integer PBITS = 2,
    // derived (not to be overridden): value width, lane-slice select bits
    parameter integer OW    = 10,
    parameter integer DSW   = LANES / COLS > 1 ? $clog2(LANES / COLS) : 1
) (
    input  wire                     clk,
    input  wire                     rst,
    input  wire                     start,
    // configuration (CSRs)
    input  wire signed [XA-1:0]     p_row0,
    input  wire signed [XA-1:0]     p_src_s,
    input  wire [GW-1:0]            p_cb, p_kh, p_kw, p_oh, ow,
    input  wire signed [GW-1:0]     p_dy, p_dx, p_padt, p_padl, sx, sy, src_h, src_w,
    input  wire signed [XA-1:0]     row_step, p_row_dy,
    input  wire [ABITS-1:0]         p_dst, p_dst_s,
    input  wire [PBITS-1:0]         p_param,
    input  wire                     p_mode,     // 0: sum, 1: max
    input  wire signed [OW-1:0]     a_zero,
    input  wire                     a_signed,
    // activation memory read port
    output wire                     re,
    output wire [ABITS-1:0]         raddr,
    input  wire [LANES*8-1:0]       rdata,
    // beats to the output unit
    output reg                      ou_valid,
    output reg  [COLS*ACCW-1:0]     ou_val,
    output wire [PBITS-1:0]         ou_param,
    output reg  [ABITS-1:0]         ou_dst,
    output reg  [DSW-1:0]           ou_dsel,
    output wire                     idle
);
    localparam integer NSEL = LANES / COLS;

    // ---- address generator -------------------------------------------------------------
    reg active;
    reg [GW-1:0] cb, oy, ox, ky, kx;
    reg signed [GW-1:0] iyb, ixb, iyk, ixk;
    reg signed [XA-1:0] cbrow, rowb, rowk;
    reg [ABITS-1:0] dst_cb, pix;

    wire kx_end = kx == p_kw - 1'b1;
    wire ky_end = ky == p_kh - 1'b1;
    wire ox_end = ox == ow - 1'b1;
    wire oy_end = oy == p_oh - 1'b1;
    wire cb_end = cb == p_cb - 1'b1;
    // only the low ABITS reach the memory: out-of-range addresses are padding (`pad`)
    /* verilator lint_off UNUSEDSIGNAL */
    wire signed [XA-1:0] addr = rowk + {{(XA-GW){ixk[GW-1]}}, ixk};
    /* verilator lint_on UNUSEDSIGNAL */
    wire pad = iyk[GW-1] || iyk >= src_h || ixk[GW-1] || ixk >= src_w;

    // ---- stage 1 and the reduction ----------------------------------------------------
    reg v1, pad1, first1, last1;
    reg [ABITS-1:0] dst1;
    reg [LANES*ACCW-1:0] acc, nxt, result;
    reg have;
    reg [DSW:0] ser_cnt;
    reg [DSW-1:0] ser_idx;
    reg [ABITS-1:0] res_dst;

    wire advance = !(v1 && last1 && ser_cnt > 1);
    assign re = advance && active;
    assign raddr = pad ? {ABITS{1'b0}} : addr[ABITS-1:0];
    assign ou_param = p_param;
    assign idle = !active && !v1 && ser_cnt == 0 && !ou_valid;

    always @(posedge clk) begin
        if (rst) begin
            active <= 1'b0;
        end else if (start) begin
            active <= 1'b1;
        end else if (advance && active && kx_end && ky_end && ox_end && oy_end && cb_end) begin
            active <= 1'b0;
        end
        if (start) begin
            {cb, oy, ox, ky, kx} <= {5*GW{1'b0}};
            iyb <= -p_padt;
            iyk <= -p_padt;
            ixb <= -p_padl;
            ixk <= -p_padl;
            cbrow <= p_row0;
            rowb <= p_row0;
            rowk <= p_row0;
            dst_cb <= p_dst;
            pix <= {ABITS{1'b0}};
        end else if (advance && active) begin
            if (!kx_end) begin
                kx <= kx + 1'b1;
                ixk <= ixk + p_dx;
            end else if (!ky_end) begin
                kx <= {GW{1'b0}};
                ixk <= ixb;
                ky <= ky + 1'b1;
                iyk <= iyk + p_dy;
                rowk <= rowk + p_row_dy;
            end else begin                  // window done: next output pixel
                {kx, ky} <= {2*GW{1'b0}};
                pix <= pix + 1'b1;
                if (!ox_end) begin
                    ox <= ox + 1'b1;
                    ixb <= ixb + sx;
                    ixk <= ixb + sx;
                    iyk <= iyb;
                    rowk <= rowb;
                end else begin
                    ox <= {GW{1'b0}};
                    ixb <= -p_padl;
                    ixk <= -p_padl;
                    if (!oy_end) begin
                        oy <= oy + 1'b1;
                        iyb <= iyb + sy;
                        iyk <= iyb + sy;
                        rowb <= rowb + row_step;
                        rowk <= rowb + row_step;
                    end else begin          // channel block done
                        oy <= {GW{1'b0}};
                        cb <= cb + 1'b1;
                        iyb <= -p_padt;
                        iyk <= -p_padt;
                        cbrow <= cbrow + p_src_s;
                        rowb <= cbrow + p_src_s;
                        rowk <= cbrow + p_src_s;
                        dst_cb <= dst_cb + p_dst_s;
                        pix <= {ABITS{1'b0}};
                    end
                end
            end
        end
    end

    // reduction of one element into the running lanes
    integer l;
    reg [7:0] b;
    reg signed [OW-1:0] x;
    reg signed [ACCW-1:0] xs, cur;
    always @* begin
        nxt = acc;
        b = 8'b0;
        x = {OW{1'b0}};
        xs = {ACCW{1'b0}};
        cur = {ACCW{1'b0}};
        for (l = 0; l < LANES; l = l + 1) begin
            b = rdata[l*8 +: 8];
            x = {{(OW-8){a_signed & b[7]}}, b};
            xs = p_mode ? {{(ACCW-OW){x[OW-1]}}, x}
                        : {{(ACCW-OW){x[OW-1]}}, x} - {{(ACCW-OW){a_zero[OW-1]}}, a_zero};
            cur = acc[l*ACCW +: ACCW];
            if (first1 || (p_mode && !have))
                nxt[l*ACCW +: ACCW] = pad1 ? {ACCW{1'b0}} : xs;
            else if (!pad1)
                nxt[l*ACCW +: ACCW] = p_mode ? ((xs > cur) ? xs : cur) : cur + xs;
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            v1 <= 1'b0;
            ser_cnt <= {(DSW+1){1'b0}};
            ou_valid <= 1'b0;
        end else begin
            if (advance) v1 <= active;
            if (v1 && last1 && advance) ser_cnt <= NSEL[DSW:0];
            else if (ser_cnt != 0) ser_cnt <= ser_cnt - 1'b1;
            ou_valid <= ser_cnt != 0;
        end
        if (advance && active) begin
            pad1 <= pad;
            first1 <= kx == 0 && ky == 0;
            last1 <= kx_end && ky_end;
            dst1 <= dst_cb + pix;
        end
        if (v1 && advance) begin
            acc <= nxt;
            have <= (first1 ? 1'b0 : have) | !pad1;
            if (last1) begin
                result <= nxt;
                res_dst <= dst1;
                ser_idx <= {DSW{1'b0}};
            end
        end
        if (ser_cnt != 0 && !(v1 && last1 && advance)) ser_idx <= ser_idx + 1'b1;
        ou_val <= result[ser_idx * COLS * ACCW +: COLS * ACCW];
        ou_dst <= res_dst;
        ou_dsel <= ser_idx;
    end
endmodule
`default_nettype wire
