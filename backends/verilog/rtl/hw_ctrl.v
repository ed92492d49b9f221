// hw_ctrl: the stream control of one hardwired layer (etch --engine hardwired).
//
// Takes one input vector per inference (N_IN codes of 8 bits, valid/ready), holds it, and
// issues PHASES * BITS steps to the layer's datapath, one per clock:
//   step (ph, bt): phase ph = 0 .. PHASES-1 (folded output neurons), bit bt = 0 .. BITS-1
//   (bit-serial inputs, MSB first; BITS = 1 for bit-parallel inputs).
// dx is what the datapath reads in that step: the held vector (BITS = 1) or one bit-plane,
// bit 7 - bt of every code (BITS = 8), taken from a shift register reloaded at bt = 0.
// The datapath returns each step's lane codes y with the step's v/ph/bt delayed by its
// pipeline; the lanes of the last bit of phase ph go to slice ph of the output buffer, and
// the output is valid once the last phase is in. One clock enable `en` advances the whole
// layer (the datapath's registers included) whenever the output buffer is free or being
// taken, so a stalled consumer freezes the layer and nothing is ever overwritten. With no
// stall the layer accepts an input every PHASES * BITS cycles (every cycle when both are 1).
`default_nettype none
module hw_ctrl #(
    parameter integer N_IN   = 4,                      // input codes per inference
    parameter integer PHASES = 1,                      // fold: phases per inference
    parameter integer BITS   = 1,                      // 1: bit-parallel, 8: bit-serial
    parameter integer LANES  = 4,                      // output codes per phase
    parameter integer PW     = 1,                      // phase counter width (>= 1)
    parameter integer BW     = 1,                      // bit counter width (>= 1)
    parameter integer DXW    = (BITS == 1) ? N_IN * 8 : N_IN  // datapath input width
) (
    input  wire                        clk,
    input  wire                        rst,            // synchronous, active high
    // input stream: one inference per beat
    input  wire                        in_valid,
    output wire                        in_ready,
    input  wire [N_IN*8-1:0]           in_data,        // code k at [8k +: 8]
    // output stream: one inference per beat
    output reg                         out_valid,
    input  wire                        out_ready,
    output wire [PHASES*LANES*8-1:0]   out_data,       // code n at [8n +: 8]
    // to the datapath: the step issued this cycle
    output wire                        en,             // advance (datapath registers too)
    output wire [DXW-1:0]              dx,             // held codes, or one bit-plane
    output wire [N_IN*8-1:0]           xh,             // the held codes
    output wire                        v,              // a step is issued
    output wire [PW-1:0]               ph,
    output wire [BW-1:0]               bt,
    // from the datapath: a step's results, after its pipeline
    input  wire [LANES*8-1:0]          y,
    input  wire                        v_o,
    input  wire [PW-1:0]               ph_o,
    input  wire [BW-1:0]               bt_o
);
    localparam integer LAST_PHI = PHASES - 1;
    localparam integer LAST_BTI = BITS - 1;
    localparam [PW-1:0] LAST_PH = LAST_PHI[PW-1:0];
    localparam [BW-1:0] LAST_BT = LAST_BTI[BW-1:0];

    reg              busy;
    reg [PW-1:0]     ph_r;
    reg [BW-1:0]     bt_r;
    reg [N_IN*8-1:0] hold;
    reg [PHASES*LANES*8-1:0] obuf;

    wire last_step = (ph_r == LAST_PH) && (bt_r == LAST_BT);
    assign en       = !out_valid || out_ready;
    assign in_ready = en && (!busy || last_step);
    assign v        = busy;
    assign ph       = ph_r;
    assign bt       = bt_r;
    assign out_data = obuf;
    assign xh       = hold;

    always @(posedge clk) begin
        if (rst) begin
            busy <= 1'b0;
            ph_r <= {PW{1'b0}};
            bt_r <= {BW{1'b0}};
        end else if (en) begin
            if (in_valid && in_ready) begin
                busy <= 1'b1;
                ph_r <= {PW{1'b0}};
                bt_r <= {BW{1'b0}};
            end else if (busy) begin
                busy <= !last_step;
                if (bt_r == LAST_BT) begin
                    bt_r <= {BW{1'b0}};
                    ph_r <= (ph_r == LAST_PH) ? {PW{1'b0}} : ph_r + 1'b1;
                end else begin
                    bt_r <= bt_r + 1'b1;
                end
            end
        end
    end

    always @(posedge clk) begin
        if (en && in_valid && in_ready) hold <= in_data;
    end

    // output buffer: slice ph_o takes the lanes of the last bit of each phase
    wire store = v_o && (bt_o == LAST_BT);
    always @(posedge clk) begin
        if (rst) begin
            out_valid <= 1'b0;
        end else if (en) begin
            out_valid <= store && (ph_o == LAST_PH);
        end
    end
    always @(posedge clk) begin
        if (en && store) obuf[ph_o * (LANES * 8) +: LANES * 8] <= y;
    end

    generate
        if (BITS == 1) begin : parallel
            assign dx = hold;
        end else begin : serial
            // bit-plane shift register: each code shifts left one bit per step
            reg  [N_IN*8-1:0] sreg;
            wire [N_IN*8-1:0] src = (bt_r == {BW{1'b0}}) ? hold : sreg;
            genvar k;
            for (k = 0; k < N_IN; k = k + 1) begin : lane
                assign dx[k] = src[8 * k + 7];
                always @(posedge clk) begin
                    if (en) sreg[8 * k +: 8] <= {src[8 * k +: 7], 1'b0};
                end
            end
        end
    endgenerate
endmodule
`default_nettype wire
