// te_delay: a D-stage delay line (D registers of W bits; D = 0 is a wire).
//
// Used for the skew of activation rows and the deskew of output columns in the systolic
// arrays. The data registers are not reset: the arrays track validity separately.
`default_nettype none
module te_delay #(
    parameter integer W = 8,                  // bits per value
    parameter integer D = 1                   // stages (cycles of delay), >= 0
) (
    // clk is unused when D = 0 (a wire); the port stays so that every D has one interface.
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire         clk,                  // the one clock
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [W-1:0] d,                    // value entering at cycle t
    output wire [W-1:0] q                     // the value that entered at cycle t - D
);
    generate
        if (D == 0) begin : g_wire
            assign q = d;
        end else begin : g_regs
            reg [W-1:0] stage [0:D-1];
            integer i;
            always @(posedge clk) begin
                stage[0] <= d;
                for (i = 1; i < D; i = i + 1) stage[i] <= stage[i-1];
            end
            assign q = stage[D-1];
        end
    endgenerate
endmodule
`default_nettype wire
