// te_io: moves a tensor between the byte stream and the activation memory (IN / OUT).
// The stream carries the tensor's bytes in C order; in memory, channel c of position p
// is lane c % LANES of word base + (c / LANES) * spatial + p. `outer` says the channel is
// the outer index of the C order (NCHW: c, then p) rather than the inner one ([M, K]: p,
// then c). IN takes one byte per cycle; OUT sends one byte per two cycles (read, send).
`default_nettype none
module te_io #(
    parameter integer LANES = 8,
    parameter integer ABITS = 10,
    parameter integer CHW   = 16,   // channel count width
    parameter integer SPW   = 20    // spatial size width
) (
    input  wire                 clk,
    input  wire                 rst,
    // the transfer
    input  wire                 start_in,
    input  wire                 start_out,
    input  wire [ABITS-1:0]     base,
    input  wire [CHW-1:0]       chans,
    input  wire [SPW-1:0]       spatial,
    input  wire                 outer,
    // the stream
    input  wire                 in_valid,
    output wire                 in_ready,
    input  wire [7:0]           in_data,
    output reg                  out_valid,
    input  wire                 out_ready,
    output wire [7:0]           out_data,
    // activation memory
    output wire [LANES-1:0]     wlane,
    output wire [ABITS-1:0]     waddr,
    output wire [LANES*8-1:0]   wdata,
    output wire                 re,
    output wire [ABITS-1:0]     raddr,
    input  wire [LANES*8-1:0]   rdata,
    output wire                 idle,
    output wire                 waiting    // blocked on the stream handshake
);
    localparam integer LB = LANES > 1 ? $clog2(LANES) : 1;

    reg act_in, act_out, rd_pending;
    reg outer_q;
    reg [CHW-1:0] c, chans_q;
    reg [SPW-1:0] p, spatial_q;
    reg [LB-1:0] lane;
    reg [ABITS-1:0] base_q, cbs;
    reg [7:0] out_byte;

    wire [ABITS-1:0] word = base_q + cbs + p[ABITS-1:0];
    wire c_end = c == chans_q - 1'b1;
    wire p_end = p == spatial_q - 1'b1;
    wire lane_end = lane == LB'(LANES - 1);
    wire in_fire = act_in && in_valid;
    wire out_fire = out_valid && out_ready;
    wire step = in_fire || out_fire;

    assign in_ready = act_in;
    assign wlane = in_fire ? ({{(LANES-1){1'b0}}, 1'b1} << lane) : {LANES{1'b0}};
    assign waddr = word;
    assign wdata = {LANES{in_data}};
    assign re = act_out && !out_valid && !rd_pending;
    assign raddr = word;
    assign out_data = out_byte;
    assign idle = !act_in && !act_out;
    assign waiting = (act_in && !in_valid) || (out_valid && !out_ready);

    always @(posedge clk) begin
        if (rst) begin
            act_in <= 1'b0;
            act_out <= 1'b0;
            out_valid <= 1'b0;
            rd_pending <= 1'b0;
        end else begin
            if (start_in) act_in <= 1'b1;
            if (start_out) act_out <= 1'b1;
            rd_pending <= re;
            if (rd_pending) out_valid <= 1'b1;
            else if (out_fire) out_valid <= 1'b0;
            if (step && c_end && p_end) begin
                act_in <= 1'b0;
                act_out <= 1'b0;
            end
        end
        if (rd_pending) out_byte <= rdata[lane*8 +: 8];
        if (start_in || start_out) begin
            base_q <= base;
            chans_q <= chans;
            spatial_q <= spatial;
            outer_q <= outer;
            {c, p, lane, cbs} <= {CHW + SPW + LB + ABITS{1'b0}};
        end else if (step) begin
            if (outer_q) begin              // c outer, p inner
                p <= p_end ? {SPW{1'b0}} : p + 1'b1;
                if (p_end) begin
                    c <= c + 1'b1;
                    lane <= lane_end ? {LB{1'b0}} : lane + 1'b1;
                    if (lane_end) cbs <= cbs + spatial_q[ABITS-1:0];
                end
            end else begin                  // p outer, c inner
                c <= c_end ? {CHW{1'b0}} : c + 1'b1;
                lane <= (c_end || lane_end) ? {LB{1'b0}} : lane + 1'b1;
                if (c_end) begin
                    cbs <= {ABITS{1'b0}};
                    p <= p + 1'b1;
                end else if (lane_end) begin
                    cbs <= cbs + spatial_q[ABITS-1:0];
                end
            end
        end
    end
endmodule
`default_nettype wire
