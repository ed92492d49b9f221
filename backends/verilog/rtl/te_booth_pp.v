// te_booth_pp: the partial products of a * w for Booth-coded w, as unsigned W-bit rows.
//
// Partial product j is d_j * a * 4^j with d_j in -2..2 (te_booth_enc). It is formed as
// X_j = (d_j = 0 ? 0 : |d_j| = 2 ? 2a : a) ^ {B{neg_j}}, B = AW+1 bits, plus neg_j: the
// two's complement negation's +1. Sign extension is avoided with the usual trick: the signed
// B-bit X_j equals U_j - 2^(B-1), U_j = X_j with its top bit inverted, so every row is an
// unsigned U_j << 2j and the products' constant part, K = -sum_j 2^(B-1+2j), is added once
// per column by the array (te_booth_const), not per product. neg_j (at bit 2j) rides in
// the free low bits of row j+1 (bit 2j < 2(j+1)); the last digit's neg_j gets a row of its
// own. So a * w = K + sum of the ND+1 rows, modulo 2^W. Rows are truncated to W bits: the
// arrays compute modulo 2^W, exact because their final sums fit W bits.
`default_nettype none
module te_booth_pp #(
    parameter integer AW = 9,                 // activation width, signed
    parameter integer ND = 4,                 // Booth digits of the weight
    parameter integer W  = 20                 // row width (the partial-sum width)
) (
    input  wire [AW-1:0]       a,             // activation, signed
    input  wire [3*ND-1:0]     digits,        // digit j at [3j +: 3] = {neg, two, nz}
    output reg  [(ND+1)*W-1:0] rows           // row j at [j*W +: W], unsigned
);
    localparam integer B  = AW + 1;           // width of a selected multiple (2a fits)
    localparam integer XW = B + 2 * ND;       // wide enough for every shifted row

    wire [B-1:0] a1 = {a[AW-1], a};           // a, sign-extended to B bits
    wire [B-1:0] a2 = {a, 1'b0};              // 2a

    reg [B-1:0]  x;
    // A row is built at full width, then truncated to W: when W < XW (a tight partial-sum
    // bound) its top bits are unused on purpose, as they do not matter modulo 2^W.
    /* verilator lint_off UNUSEDSIGNAL */
    reg [XW-1:0] row;
    /* verilator lint_on UNUSEDSIGNAL */
    integer j;
    always @* begin
        rows = {((ND+1)*W){1'b0}};
        for (j = 0; j <= ND; j = j + 1) begin
            row = {XW{1'b0}};
            if (j < ND) begin
                x = (digits[3*j+1] ? a2 : a1) & {B{digits[3*j]}};
                x = x ^ {B{digits[3*j+2]}};
                row[2*j +: B] = {~x[B-1], x[B-2:0]};
            end else begin
                x = {B{1'b0}};
            end
            if (j > 0) row[2*j-2] = digits[3*(j-1)+2];          // neg of the digit below
            rows[j*W +: W] = W'(row);
        end
    end
endmodule
`default_nettype wire
