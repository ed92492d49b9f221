// Testbench wrapper for an array of the array contract (here te_array_ref) on the stream
// harness: each input beat is a weight tile (ROWS x COLS codes of WW bits, row-major from
// bit 0) followed by one activation vector (ROWS values of AW bits); the wrapper loads the
// tile row by row, sends the vector, and returns the COLS partial sums (PW bits each).
`default_nettype none
module tb_array #(
    parameter integer ROWS = 4,
    parameter integer COLS = 3,
    parameter integer AW   = 9,
    parameter integer WW   = 5,
    parameter integer PW   = 16,
    parameter integer INB  = 13,   // input beat bytes
    parameter integer OUTB = 7     // output beat bytes
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              in_valid,
    output wire              in_ready,
    input  wire [INB*8-1:0]  in_data,
    output reg               out_valid,
    input  wire              out_ready,
    output reg  [OUTB*8-1:0] out_data
);
    localparam integer RB = ROWS > 1 ? $clog2(ROWS) : 1;
    localparam integer TW = ROWS * COLS * WW;
    localparam [1:0] IDLE = 2'd0, LOAD = 2'd1, SEND = 2'd2, WAIT = 2'd3;
    reg [1:0] state;
    reg [INB*8-1:0] beat;
    reg [RB-1:0] row;
    wire w_ready, a_ready, o_valid, busy;
    wire [COLS*PW-1:0] o_data;

    te_array_ref #(.ROWS(ROWS), .COLS(COLS), .AW(AW), .WW(WW), .PW(PW)) dut (
        .clk(clk), .rst(rst), .w_valid(state == LOAD), .w_row(row),
        .w_data(beat[row * COLS * WW +: COLS * WW]), .w_bits(4'd8), .w_plane_mask(8'hff),
        .w_ready(w_ready), .a_valid(state == SEND), .a_ready(a_ready),
        .a_data(beat[TW +: ROWS * AW]), .o_valid(o_valid), .o_data(o_data), .busy(busy));

    assign in_ready = state == IDLE && !out_valid;
    always @(posedge clk) begin
        if (rst) begin
            state <= IDLE;
            out_valid <= 1'b0;
        end else begin
            if (out_valid && out_ready) out_valid <= 1'b0;
            case (state)
                IDLE: if (in_valid && in_ready) begin
                    beat <= in_data;
                    row <= {RB{1'b0}};
                    state <= LOAD;
                end
                LOAD: if (w_ready) begin
                    row <= row + 1'b1;
                    if (row == RB'(ROWS - 1)) state <= SEND;
                end
                SEND: if (a_ready) state <= WAIT;
                default: if (o_valid) begin
                    out_data <= {{(OUTB * 8 - COLS * PW){1'b0}}, o_data};
                    out_valid <= 1'b1;
                    state <= IDLE;
                end
            endcase
        end
    end
    wire unused = &{1'b0, busy, beat[INB*8-1:TW + ROWS*AW]};
endmodule
`default_nettype wire
