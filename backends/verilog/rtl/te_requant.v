// te_requant: the requantisation formula of DESIGN.md, written once in
// compiler/reference.py (`requantize`) and here in hardware, bit for bit:
//
//     prod = x * m0                                  (exact, IW + MW + 1 bits)
//     mag  = (|prod| + (sh > 0 ? 2^(sh-1) : 0)) >> sh  (round half away from zero)
//     y    = clamp((prod < 0 ? -mag : mag) + zp, lo, hi)
//
// m0 is unsigned (M0 in [2^30, 2^31), or 0), sh >= 0 may exceed the product width (the
// result is then 0 before the zero point). Combinational; the caller registers y.
`default_nettype none
module te_requant #(
    parameter integer IW = 32,   // input width, signed
    parameter integer MW = 31,   // multiplier width, unsigned
    parameter integer SW = 6,    // shift width, unsigned
    parameter integer OW = 10    // output width, signed (zp, lo, hi have this width)
) (
    input  wire signed [IW-1:0] x,
    input  wire        [MW-1:0] m0,
    input  wire        [SW-1:0] sh,
    input  wire signed [OW-1:0] zp,
    input  wire signed [OW-1:0] lo,
    input  wire signed [OW-1:0] hi,
    output reg  signed [OW-1:0] y
);
    localparam integer PWID = IW + MW + 1;       // product width, signed
    localparam integer MAGW = IW + MW;           // |prod| < 2^(IW-1) * 2^MW
    localparam integer RW   = PWID + 1;          // rounded value plus zero point, signed

    wire signed [PWID-1:0] prod = x * $signed({1'b0, m0});
    wire neg = prod[PWID-1];
    /* verilator lint_off UNUSEDSIGNAL */
    wire [PWID-1:0] absval = neg ? -prod : prod;   // < 2^MAGW: the top bit is always 0
    /* verilator lint_on UNUSEDSIGNAL */
    wire [MAGW-1:0] mag0 = absval[MAGW-1:0];
    // 2^(sh-1) within MAGW bits; when it does not fit, mag0 >> sh is 0 anyway
    wire [MAGW-1:0] half = (sh == {SW{1'b0}}) ? {MAGW{1'b0}}
                         : ({{(MAGW-1){1'b0}}, 1'b1} << (sh - 1'b1));
    wire [MAGW:0] rounded = ({1'b0, mag0} + {1'b0, half}) >> sh;
    wire signed [RW-1:0] signed_mag = neg ? -$signed({{(RW-MAGW-1){1'b0}}, rounded})
                                          : $signed({{(RW-MAGW-1){1'b0}}, rounded});
    wire signed [RW-1:0] shifted = signed_mag + {{(RW-OW){zp[OW-1]}}, zp};
    wire signed [RW-1:0] lo_w = {{(RW-OW){lo[OW-1]}}, lo};
    wire signed [RW-1:0] hi_w = {{(RW-OW){hi[OW-1]}}, hi};

    always @* begin
        if (shifted < lo_w)      y = lo;
        else if (shifted > hi_w) y = hi;
        else                     y = shifted[OW-1:0];
    end
endmodule
`default_nettype wire
