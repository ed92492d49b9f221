// te_dot_booth: one column of the multiplier-adder-tree array, `booth` kind.
//
// Holds the column's ROWS weights as radix-4 Booth digits (encoded at load). The Booth rows
// of all ROWS products (te_booth_pp) and the products' constant part (te_booth_const) go
// through one Wallace tree of 3:2 compressors (te_csa_tree) and a single carry-propagate
// adder at its root: no multiplier has an adder of its own (the tensor-processing-engine
// paper's bit-weight transformation for adder trees). dot = sum_r a[r] * w[r] mod 2^PW,
// combinational; exact because the column sum fits PW bits by construction.
`default_nettype none
module te_dot_booth #(
    parameter integer ROWS = 8,               // products per column
    parameter integer AW   = 9,               // activation width, signed
    parameter integer ND   = 4,               // Booth digits per weight, ceil(WW/2)
    parameter integer PW   = 20               // result width
) (
    input  wire                   clk,        // the one clock (weights only)
    // weight load: Booth digits
    input  wire [ROWS-1:0]        w_load,     // one-hot: take d_in as the digits of row r
    input  wire [3*ND-1:0]        d_in,       // digit j at [3j +: 3] = {neg, two, nz}
    // activations (shared by every column) and the column's dot product
    input  wire [ROWS*AW-1:0]     a,          // row r at [r*AW +: AW], signed
    output wire [PW-1:0]          dot         // sum_r a[r] * w[r], combinational
);
    localparam integer NR = ND + 1;           // Booth rows per product
    localparam integer N  = ROWS * NR + 1;    // tree operands: every row, and the constant

    reg  [3*ND-1:0]  d_q [0:ROWS-1];          // the stationary digits
    wire [NR*PW-1:0] rows [0:ROWS-1];         // product r's Booth rows
    wire [N*PW-1:0]  ops;
    wire [PW-1:0]    s, c;

    integer i;
    always @(posedge clk) begin
        for (i = 0; i < ROWS; i = i + 1)
            if (w_load[i]) d_q[i] <= d_in;
    end

    genvar r, q;
    generate
        for (r = 0; r < ROWS; r = r + 1) begin : g_prod
            te_booth_pp #(.AW(AW), .ND(ND), .W(PW)) u_pp (
                .a(a[r*AW +: AW]), .digits(d_q[r]), .rows(rows[r]));
            // operands ordered by row index, then product: rows of equal weight meet first
            for (q = 0; q < NR; q = q + 1) begin : g_row
                assign ops[(q*ROWS + r)*PW +: PW] = rows[r][q*PW +: PW];
            end
        end
    endgenerate
    te_booth_const #(.AW(AW), .ND(ND), .W(PW), .COUNT(ROWS)) u_const (
        .k(ops[ROWS*NR*PW +: PW]));
    te_csa_tree #(.N(N), .W(PW)) u_tree (.ops(ops), .sum(s), .carry(c));
    assign dot = s + c;                       // the single carry-propagate adder
endmodule
`default_nettype wire
