// te_array_ref: the behavioural reference array of the tensor-engine array contract
// (ARRAY_CONTRACT.md): a plain multiply-accumulate array, o[c] = sum_r a[r] * w[r][c],
// exact, written as loops rather than PEs. It lets the engine run before the real
// systolic / adder-tree arrays exist, and is what they are checked against.
//
// Timing: latency from a_valid & a_ready to o_valid is 1 cycle; one vector per cycle
// (a_ready is always high); w_ready is high when no result is in flight; a weight tile is
// ROWS beats of w_valid (any order of w_row). w_bits / w_plane_mask are not used (bit-
// parallel PE).
`default_nettype none
module te_array_ref #(
    parameter integer ROWS = 8,    // reduction lanes: one activation per row
    parameter integer COLS = 8,    // output lanes: one weight column per col
    parameter integer AW   = 9,    // activation width, signed
    parameter integer WW   = 8,    // weight width, signed
    parameter integer PW   = 21    // partial-sum width, signed (exact bound, from the engine)
) (
    input  wire                                 clk,
    input  wire                                 rst,
    // weight tile load: one row (COLS weights) per beat
    input  wire                                 w_valid,
    input  wire [(ROWS > 1 ? $clog2(ROWS) : 1)-1:0] w_row,
    input  wire [COLS*WW-1:0]                   w_data,     // column c at [c*WW +: WW]
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [3:0]                           w_bits,     // bit-serial only
    input  wire [7:0]                           w_plane_mask,
    /* verilator lint_on UNUSEDSIGNAL */
    output wire                                 w_ready,
    // compute: one activation vector per beat
    input  wire                                 a_valid,
    output wire                                 a_ready,
    input  wire [ROWS*AW-1:0]                   a_data,     // row r at [r*AW +: AW]
    // result: one beat per vector, in order
    output reg                                  o_valid,
    output reg  [COLS*PW-1:0]                   o_data,     // column c at [c*PW +: PW]
    output wire                                 busy
);
    reg [COLS*WW-1:0] w [0:ROWS-1];
    // sums and products in XW bits: exact (a product may be wider than PW alone when
    // ROWS is 1; the sum of ROWS of them fits PW by construction)
    localparam integer XW = (AW + WW > PW) ? AW + WW : PW;
    reg signed [XW-1:0] sum [0:COLS-1];
    reg signed [XW-1:0] prod;

    assign w_ready = !o_valid;
    assign a_ready = 1'b1;
    assign busy = o_valid;

    integer r, c;
    always @* begin
        for (c = 0; c < COLS; c = c + 1) begin
            sum[c] = {XW{1'b0}};
            for (r = 0; r < ROWS; r = r + 1) begin
                prod = $signed({{(XW-AW){a_data[r*AW+AW-1]}}, a_data[r*AW +: AW]})
                     * $signed({{(XW-WW){w[r][c*WW+WW-1]}}, w[r][c*WW +: WW]});
                sum[c] = sum[c] + prod;
            end
        end
    end

    always @(posedge clk) begin
        if (rst) begin
            o_valid <= 1'b0;
        end else begin
            o_valid <= a_valid && a_ready;
        end
        if (w_valid && w_ready) w[w_row] <= w_data;
        if (a_valid && a_ready)
            for (c = 0; c < COLS; c = c + 1) o_data[c*PW +: PW] <= sum[c][PW-1:0];
    end
endmodule
`default_nettype wire
