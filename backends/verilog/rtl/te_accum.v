// te_accum: K-tile accumulation. The array returns, per activation vector m of a pass, the
// partial sums of one weight tile (COLS lanes of PW bits); a layer whose reduction is
// longer than ROWS runs several passes over the same vectors, and this unit adds them up:
//
//   first pass:  acc = bias[param] + partial          (the bias enters once, here)
//   later pass:  acc = accbuf[m]   + partial
//   last pass:   the sum goes to the output unit (word dst + m, lane slice dsel),
//   otherwise:   accbuf[m] = acc
//
// A pass's attributes are latched on `start` (the first weight beat of the pass: the
// array has drained then, so every earlier result has already entered this unit). Two
// stages; results leave registered. Widths: ACCW holds the exact bound of every layer's
// sum (docs/ARCHITECTURE.md, Numerics), computed by the compiler, and is wider than PW and BW.
`default_nettype none
module te_accum #(
    parameter integer COLS   = 8,
    parameter integer PW     = 21,   // partial-sum width from the array, signed
    parameter integer ACCW   = 24,   // accumulator width, signed
    parameter integer BW     = 16,   // bias width, signed
    parameter integer ACCD   = 64,   // accumulator buffer entries (vectors per pass)
    parameter integer PDEPTH = 4,    // bias words (one per parameter index)
    parameter integer ABITS  = 10,   // activation memory address bits
    parameter integer DSW    = 1,    // lane-slice select bits
    parameter integer PBITS  = PDEPTH > 1 ? $clog2(PDEPTH) : 1   // derived
) (
    input  wire                     clk,
    input  wire                     rst,
    // the pass about to produce results
    input  wire                     start,
    input  wire                     first,
    input  wire                     last,
    input  wire [PBITS-1:0]         param,
    input  wire [ABITS-1:0]         dst,
    input  wire [DSW-1:0]           dsel,
    // partial sums from the array
    input  wire                     o_valid,
    input  wire [COLS*PW-1:0]       o_data,
    // sums to the output unit
    output reg                      ou_valid,
    output reg  [COLS*ACCW-1:0]     ou_val,
    output reg  [PBITS-1:0]         ou_param,
    output reg  [ABITS-1:0]         ou_dst,
    output reg  [DSW-1:0]           ou_dsel,
    output wire                     busy
);
    localparam integer CBITS = ACCD > 1 ? $clog2(ACCD) : 1;

    reg first_q, last_q;
    reg [PBITS-1:0] param_q;
    reg [ABITS-1:0] dst_q, m;
    reg [DSW-1:0] dsel_q;
    reg v1, first1, last1;
    reg [COLS*PW-1:0] part1;
    reg [CBITS-1:0] m1;
    reg [ABITS-1:0] dst1;
    reg [PBITS-1:0] param1;
    reg [DSW-1:0] dsel1;

    wire [COLS*ACCW-1:0] acc_old;
    wire [COLS*BW-1:0] bias;
    reg  [COLS*ACCW-1:0] sum;
    wire acc_we = v1 && !last1;

    te_ram #(.WIDTH(COLS*ACCW), .DEPTH(ACCD)) accbuf (
        .clk(clk), .re(o_valid && !first_q), .raddr(m[CBITS-1:0]), .rdata(acc_old),
        .wlane(acc_we), .waddr(m1), .wdata(sum));
    te_ram #(.WIDTH(COLS*BW), .DEPTH(PDEPTH), .INIT("etch_bias")) biases (
        .clk(clk), .re(o_valid && first_q), .raddr(param_q), .rdata(bias),
        .wlane(1'b0), .waddr({PBITS{1'b0}}), .wdata({COLS*BW{1'b0}}));

    integer c;
    always @* begin
        for (c = 0; c < COLS; c = c + 1)
            sum[c*ACCW +: ACCW] =
                (first1 ? {{(ACCW-BW){bias[c*BW+BW-1]}}, bias[c*BW +: BW]}
                        : acc_old[c*ACCW +: ACCW])
                + {{(ACCW-PW){part1[c*PW+PW-1]}}, part1[c*PW +: PW]};
    end

    always @(posedge clk) begin
        if (rst) begin
            v1 <= 1'b0;
            ou_valid <= 1'b0;
            m <= {ABITS{1'b0}};
        end else begin
            v1 <= o_valid;
            ou_valid <= v1 && last1;
            if (start) m <= {ABITS{1'b0}};
            else if (o_valid) m <= m + 1'b1;
        end
        if (start) begin
            first_q <= first;
            last_q <= last;
            param_q <= param;
            dst_q <= dst;
            dsel_q <= dsel;
        end
        part1 <= o_data;
        m1 <= m[CBITS-1:0];
        dst1 <= dst_q + m;
        first1 <= first_q;
        last1 <= last_q;
        param1 <= param_q;
        dsel1 <= dsel_q;
        ou_val <= sum;
        ou_param <= param1;
        ou_dst <= dst1;
        ou_dsel <= dsel1;
    end

    assign busy = v1 | ou_valid;
endmodule
`default_nettype wire
