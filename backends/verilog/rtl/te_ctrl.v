// te_ctrl: the tensor engine's controller. It fetches the program (+etch_prog, te_isa's
// format) one instruction per cycle, keeps the configuration registers, and hands each
// instruction to its unit: PASS to the pass sequencer (as soon as it can take one, so the
// next pass is queued while the current one streams), POOL to the pool unit, IN/OUT to
// the stream unit (blocking), SYNC waits until every unit is idle, END restarts the
// program for the next inference. `layer` is the layer field of the instruction being
// executed, for cycle statistics.
`default_nettype none
module te_ctrl #(
    parameter integer IDEPTH = 16     // program words
) (
    input  wire                         clk,
    input  wire                         rst,
    // configuration registers, CSR k at [k*CSR_BITS +: CSR_BITS]
    output reg  [te_isa::NCSR*te_isa::CSR_BITS-1:0] cfg,
    // the current instruction and what it asks for
    output wire [te_isa::IW-1:0]        ir,
    output wire                         pass_valid,
    input  wire                         pass_ready,
    output wire                         pool_start,
    output wire                         io_start_in,
    output wire                         io_start_out,
    // unit status
    input  wire                         pool_idle,
    input  wire                         io_idle,
    input  wire                         all_idle,    // every unit idle (for SYNC)
    output wire [te_isa::LAYER_W-1:0]   layer
);
    localparam integer IW   = te_isa::IW;
    localparam integer NCSR = te_isa::NCSR;
    localparam integer CSRB = te_isa::CSR_BITS;
    localparam integer PB   = IDEPTH > 1 ? $clog2(IDEPTH) : 1;

    reg [PB-1:0] pc;
    reg ir_valid, io_kicked;
    wire [IW-1:0] word;
    wire [te_isa::OP_W-1:0] op = word[te_isa::OP_LSB +: te_isa::OP_W];
    wire is_cfg  = ir_valid && op == te_isa::OP_CFG;
    wire is_pass = ir_valid && op == te_isa::OP_PASS;
    wire is_pool = ir_valid && op == te_isa::OP_POOL;
    wire is_io   = ir_valid && (op == te_isa::OP_IN || op == te_isa::OP_OUT);
    wire is_sync = ir_valid && op == te_isa::OP_SYNC;
    wire is_end  = ir_valid && op == te_isa::OP_END;
    wire done = is_cfg || is_end || (is_pass && pass_ready) || (is_pool && pool_idle)
              || (is_io && io_kicked && io_idle) || (is_sync && all_idle);
    wire [PB-1:0] next_pc = rst ? {PB{1'b0}} : !done ? pc : is_end ? {PB{1'b0}} : pc + 1'b1;

    te_ram #(.WIDTH(IW), .DEPTH(IDEPTH), .INIT("etch_prog")) imem (
        .clk(clk), .re(1'b1), .raddr(next_pc), .rdata(word),
        .wlane(1'b0), .waddr({PB{1'b0}}), .wdata({IW{1'b0}}));

    assign ir = word;
    assign pass_valid = is_pass;
    assign pool_start = is_pool && pool_idle;
    assign io_start_in = is_io && !io_kicked && op == te_isa::OP_IN;
    assign io_start_out = is_io && !io_kicked && op == te_isa::OP_OUT;
    assign layer = ir_valid ? word[te_isa::LAYER_LSB +: te_isa::LAYER_W]
                            : {te_isa::LAYER_W{1'b0}};

    wire [te_isa::CFG_IDX_W-1:0] idx = word[te_isa::CFG_IDX_LSB +: te_isa::CFG_IDX_W];
    wire [2:0] wmask = word[te_isa::CFG_WMASK_LSB +: te_isa::CFG_WMASK_W];
    integer j, k;
    always @(posedge clk) begin
        if (rst) begin
            pc <= {PB{1'b0}};
            ir_valid <= 1'b0;
            io_kicked <= 1'b0;
            cfg <= {NCSR*CSRB{1'b0}};
        end else begin
            pc <= next_pc;
            ir_valid <= 1'b1;
            if (is_io) io_kicked <= !done;
            if (is_cfg) begin  // register k takes value j when idx + j == k
                for (k = 0; k < NCSR; k = k + 1)
                    for (j = 0; j < 3; j = j + 1)
                        if (wmask[j] && idx == te_isa::CFG_IDX_W'(k - j))
                            cfg[k * CSRB +: CSRB] <= word[te_isa::CFG_V0_LSB + j * CSRB +: CSRB];
            end
        end
    end
endmodule
`default_nettype wire
