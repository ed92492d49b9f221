// te_ram: a synchronous memory with NRD registered read ports and one write port with
// lane (byte) enables, optionally initialised at simulation start by $readmemh from the
// file named by the plusarg +<INIT>=<file>. Every on-chip buffer of the tensor engine is
// one of these (weights, activations, accumulators, bias, requantisation parameters,
// tables, instructions); synthesis flows treat it as an SRAM macro (see area.py).
//
// Read: rdata[k] <= mem[raddr[k]] on a clock edge where re[k] is high (it holds its value
// otherwise, which lets a stalled pipeline keep its operand); an address past DEPTH reads
// zero. Write: lanes with wlane[i] high take wdata's lane i at waddr.
`default_nettype none
module te_ram #(
    parameter integer WIDTH = 8,          // bits per word
    parameter integer DEPTH = 16,         // words
    parameter integer LANES = 1,          // write-enable lanes (WIDTH / LANES bits each)
    parameter integer NRD   = 1,          // read ports
    parameter integer ABITS = (DEPTH > 1) ? $clog2(DEPTH) : 1,  // address bits
    parameter         INIT  = ""          // plusarg naming the $readmemh file ("" = none)
) (
    input  wire                   clk,
    // read ports: port k uses re[k], raddr[k*ABITS +: ABITS], rdata[k*WIDTH +: WIDTH]
    input  wire [NRD-1:0]         re,
    input  wire [NRD*ABITS-1:0]   raddr,
    output reg  [NRD*WIDTH-1:0]   rdata,
    // write port
    input  wire [LANES-1:0]       wlane,   // lanes written this cycle (0: no write)
    input  wire [ABITS-1:0]       waddr,
    input  wire [WIDTH-1:0]       wdata
);
    localparam integer LW = WIDTH / LANES;
    reg [WIDTH-1:0] mem [0:DEPTH-1];

`ifndef SYNTHESIS
    reg [8*512-1:0] path;
    initial begin
        if (INIT != "" && $value$plusargs({INIT, "=%s"}, path)) $readmemh(path, mem);
    end
`endif

    integer k, i;
    always @(posedge clk) begin
        for (k = 0; k < NRD; k = k + 1) begin
            if (re[k]) begin
                if ({1'b0, raddr[k*ABITS +: ABITS]} < DEPTH[ABITS:0])
                    rdata[k*WIDTH +: WIDTH] <= mem[raddr[k*ABITS +: ABITS]];
                else
                    rdata[k*WIDTH +: WIDTH] <= {WIDTH{1'b0}};
            end
        end
        for (i = 0; i < LANES; i = i + 1) begin
            if (wlane[i] && {1'b0, waddr} < DEPTH[ABITS:0])
                mem[waddr][i*LW +: LW] <= wdata[i*LW +: LW];
        end
    end
endmodule
`default_nettype wire
