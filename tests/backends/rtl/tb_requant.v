// Testbench wrapper for te_requant on the stream harness: each 16-byte input beat is one
// vector {hi[15:0], lo[15:0], zp[15:0], sh[7:0], m0[31:0], x[39:0]} (little-endian
// bytes); the 6-byte output beat is {y_side[31:0], y_main[15:0]}: y_main from the output
// unit's main requantiser (IW=28 accumulator, 10-bit result), y_side from a QAdd side
// requantiser (IW=11, 32-bit result clamped to int32, zero point 0). One vector at a time:
// accept, let te_requant's product register load, capture y.
`default_nettype none
module tb_requant (
    input  wire          clk,
    input  wire          rst,
    input  wire          in_valid,
    output wire          in_ready,
    input  wire [127:0]  in_data,
    output reg           out_valid,
    input  wire          out_ready,
    output reg  [47:0]   out_data
);
    localparam integer IW = 28, SW = 6, OW = 10;
    reg [127:0] beat;
    reg busy;        // a vector is in te_requant's product register
    wire [39:0] x = beat[39:0];
    wire [30:0] m0 = beat[70:40];
    wire [SW-1:0] sh = beat[72 +: SW];
    wire [OW-1:0] zp = beat[80 +: OW];
    wire [OW-1:0] lo = beat[96 +: OW];
    wire [OW-1:0] hi = beat[112 +: OW];
    wire signed [OW-1:0] y_main;
    wire signed [31:0] y_side;
    te_requant #(.IW(IW), .MW(31), .SW(SW), .OW(OW)) main (
        .clk(clk), .x(x[IW-1:0]), .m0(m0), .sh(sh), .zp(zp), .lo(lo), .hi(hi), .y(y_main));
    te_requant #(.IW(11), .MW(31), .SW(SW), .OW(32)) side (
        .clk(clk), .x(x[10:0]), .m0(m0), .sh(sh), .zp(32'sd0), .lo(32'sh80000000),
        .hi(32'sh7fffffff), .y(y_side));
    reg loaded;      // beat holds a vector, its product loads at the next edge
    assign in_ready = !loaded && !busy && !out_valid;
    always @(posedge clk) begin
        if (rst) begin
            {loaded, busy, out_valid} <= 3'b0;
        end else begin
            if (in_valid && in_ready) begin
                beat <= in_data;
                loaded <= 1'b1;
            end
            if (loaded) begin
                loaded <= 1'b0;
                busy <= 1'b1;
            end
            if (busy) begin
                busy <= 1'b0;
                out_valid <= 1'b1;
                out_data <= {y_side, {(16 - OW){y_main[OW-1]}}, y_main};
            end
            if (out_valid && out_ready) out_valid <= 1'b0;
        end
    end
    wire unused = &{1'b0, x[39:IW], beat[127:122], beat[111:106], beat[95:90], beat[79:78],
                    beat[71]};
endmodule
`default_nettype wire
