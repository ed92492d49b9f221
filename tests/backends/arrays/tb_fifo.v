// tb_fifo: a synchronous FIFO for the array test wrapper (DEPTH a power of two).
`default_nettype none
module tb_fifo #(
    parameter integer W     = 32,             // bits per entry
    parameter integer DEPTH = 64              // entries, a power of two
) (
    input  wire          clk,
    input  wire          rst,                 // synchronous, active high: empty
    input  wire          push,                // store d (the caller never pushes when full)
    input  wire [W-1:0]  d,
    input  wire          pop,                 // drop the head (never when empty)
    output wire [W-1:0]  head,                // oldest entry, valid when count > 0
    output reg  [AB:0]   count                // entries held
);
    localparam integer AB = $clog2(DEPTH);
    reg [W-1:0]  mem [0:DEPTH-1];
    reg [AB-1:0] rd, wr;
    assign head = mem[rd];
    always @(posedge clk) begin
        if (rst) begin
            rd    <= {AB{1'b0}};
            wr    <= {AB{1'b0}};
            count <= {(AB+1){1'b0}};
        end else begin
            if (push) begin
                mem[wr] <= d;
                wr      <= wr + 1'b1;
            end
            if (pop) rd <= rd + 1'b1;
            count <= count + {{AB{1'b0}}, push} - {{AB{1'b0}}, pop};
        end
    end
endmodule
`default_nettype wire
