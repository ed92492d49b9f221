// te_array_addertree_mac: multiplier-adder-tree array of `mac` columns (te_dot_mac).
//
// Interface: /work/wt/ARRAY_CONTRACT.md (module name te_array_<engine>_<pe>). Every column
// holds its ROWS weights and multiplies the whole activation vector at once (activations
// are broadcast along the rows); an adder tree reduces each column to o[c].
//
// Timing, for a vector accepted at cycle t (a_valid & a_ready): t+1 the vector is in the
// input register and the products and trees work on it; t+2 o_valid with the registered
// result. Latency = 2 cycles, for every ROWS x COLS; interval 1 cycle.
// Weights: w_valid & w_ready writes row w_row of the tile; w_ready = !busy (drained), and
// a_ready = !w_valid, so a vector never meets a half-written tile in the same cycle.
`default_nettype none
module te_array_addertree_mac #(
    parameter integer ROWS = 8,               // reduction lanes: one activation per row
    parameter integer COLS = 8,               // output lanes: one weight column per col
    parameter integer AW   = 9,               // activation width, signed
    parameter integer WW   = 8,               // weight width, signed
    parameter integer PW   = AW + WW + $clog2(ROWS)  // partial-sum width (exact bound)
) (
    input  wire                   clk,
    input  wire                   rst,        // synchronous, active high
    // weight tile load: row w_row of the tile per beat
    input  wire                   w_valid,
    input  wire [$clog2(ROWS > 1 ? ROWS : 2)-1:0] w_row,  // >= 1 bit
    input  wire [COLS*WW-1:0]     w_data,     // column c at [c*WW +: WW]
    /* verilator lint_off UNUSEDSIGNAL */     // bit-plane controls are for `bitserial` only
    input  wire [3:0]             w_bits,
    input  wire [7:0]             w_plane_mask,
    /* verilator lint_on UNUSEDSIGNAL */
    output wire                   w_ready,    // the array is drained: may load
    // compute: one activation vector per beat
    input  wire                   a_valid,
    output wire                   a_ready,
    input  wire [ROWS*AW-1:0]     a_data,     // row r at [r*AW +: AW]
    // result: one beat per vector, in order; no back-pressure
    output wire                   o_valid,
    output wire [COLS*PW-1:0]     o_data,     // column c at [c*PW +: PW], signed
    output wire                   busy        // a vector is in flight
);
    localparam integer RB = $clog2(ROWS > 1 ? ROWS : 2);  // w_row width

    // ---- control ----
    reg v_in, v_out;                          // valid of the input / output register
    assign a_ready = !w_valid;
    assign w_ready = !busy;
    assign busy    = v_in || v_out;
    assign o_valid = v_out;
    always @(posedge clk) begin
        if (rst) begin
            v_in  <= 1'b0;
            v_out <= 1'b0;
        end else begin
            v_in  <= a_valid && a_ready;
            v_out <= v_in;
        end
    end

    // ---- datapath ----
    reg  [ROWS*AW-1:0] a_q;                   // input register
    reg  [COLS*PW-1:0] o_q;                   // output register
    wire [COLS*PW-1:0] dots;
    wire [ROWS-1:0]    w_load;
    assign o_data = o_q;
    always @(posedge clk) begin
        a_q <= a_data;
        o_q <= dots;
    end

    genvar r, c;
    generate
        for (r = 0; r < ROWS; r = r + 1) begin : g_load
            assign w_load[r] = w_valid && w_ready && w_row == RB'(r);
        end
        for (c = 0; c < COLS; c = c + 1) begin : g_col
            te_dot_mac #(.ROWS(ROWS), .AW(AW), .WW(WW), .PW(PW)) u_dot (
                .clk(clk), .w_load(w_load), .w_in(w_data[c*WW +: WW]),
                .a(a_q), .dot(dots[c*PW +: PW]));
        end
    endgenerate
endmodule
`default_nettype wire
