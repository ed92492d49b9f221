// A two-stage stream pipeline for the harness tests: out = in + K, bytewise (mod 256).
`default_nettype none
module stream_add #(
    parameter integer BYTES = 5,              // bytes per beat
    parameter integer K     = 3               // added to every byte
) (
    input  wire                 clk,
    input  wire                 rst,
    input  wire                 in_valid,       // in_data holds a beat
    output wire                 in_ready,       // the pipeline takes it this cycle
    input  wire [BYTES*8-1:0]   in_data,
    output wire                 out_valid,      // out_data holds a result beat
    input  wire                 out_ready,      // the consumer takes it this cycle
    output wire [BYTES*8-1:0]   out_data,
    output wire                 stat_busy,      // a beat is in flight
    output wire [15:0]          stat_layer      // which stage holds the oldest beat
);
    reg [BYTES*8-1:0] s0, s1;
    reg v0, v1;
    wire adv1 = !v1 || out_ready;             // stage 1 can take a new value
    wire adv0 = !v0 || adv1;                  // stage 0 can take a new value
    assign in_ready  = adv0;
    assign out_valid = v1;
    assign out_data  = s1;
    assign stat_busy = v0 || v1;
    assign stat_layer = v1 ? 16'd1 : 16'd0;
    integer i;
    always @(posedge clk) begin
        if (rst) begin
            v0 <= 1'b0;
            v1 <= 1'b0;
        end else begin
            if (adv1) begin
                v1 <= v0;
                for (i = 0; i < BYTES; i = i + 1) s1[i*8 +: 8] <= s0[i*8 +: 8] + K[7:0];
            end
            if (adv0) begin
                v0 <= in_valid;
                s0 <= in_data;
            end
        end
    end
endmodule
`default_nettype wire
