// te_requant: the requantisation formula of docs/ARCHITECTURE.md, written once in
// compiler/reference.py (`requantize`) and here in hardware, bit for bit:
//
//     prod = x * m0                                  (exact)
//     mag  = (|prod| + (sh > 0 ? 2^(sh-1) : 0)) >> sh  (round half away from zero)
//     y    = clamp((prod < 0 ? -mag : mag) + zp, lo, hi)
//
// m0 is unsigned (M0 in [2^30, 2^31), or 0), so |prod| = |x| * m0 and prod < 0 exactly when
// x < 0 (with m0 = 0 the magnitude is 0 and the sign does not matter): the multiplier is an
// unsigned IW x MW one. sh >= 0 may exceed the product width (the result is then 0 before
// the zero point).
//
// Two stages: x, m0 and sh are taken at a clock edge (the product is registered: it cuts
// the multiplier off the rounding logic), y follows combinationally from the registered
// product one cycle later. zp, lo and hi are read in that second cycle (configuration
// registers, constant while a layer runs).
`default_nettype none
module te_requant #(
    parameter integer IW = 32,   // input width, signed
    parameter integer MW = 31,   // multiplier width, unsigned
    parameter integer SW = 6,    // shift width, unsigned
    parameter integer OW = 10    // output width, signed (zp, lo, hi have this width)
) (
    input  wire                 clk,
    // stage 1 (registered at the clock edge)
    input  wire signed [IW-1:0] x,
    input  wire        [MW-1:0] m0,
    input  wire        [SW-1:0] sh,
    // stage 2 (the cycle after)
    input  wire signed [OW-1:0] zp,
    input  wire signed [OW-1:0] lo,
    input  wire signed [OW-1:0] hi,
    output reg  signed [OW-1:0] y
);
    localparam integer MAGW = IW + MW;           // |prod| <= 2^(IW-1) * (2^MW - 1)
    localparam integer RW   = MAGW + 2;          // rounded value plus zero point, signed

    wire neg0 = x[IW-1];
    wire [IW-1:0] ax = neg0 ? -x : x;            // |x| <= 2^(IW-1) fits IW unsigned bits

    reg [MAGW-1:0] mag0;
    reg neg;
    reg [SW-1:0] shq;
    always @(posedge clk) begin
        mag0 <= {{MW{1'b0}}, ax} * {{IW{1'b0}}, m0};
        neg <= neg0;
        shq <= sh;
    end

    // 2^(sh-1) within MAGW bits; when it does not fit, mag0 >> sh is 0 anyway
    wire [MAGW-1:0] half = (shq == {SW{1'b0}}) ? {MAGW{1'b0}}
                         : ({{(MAGW-1){1'b0}}, 1'b1} << (shq - 1'b1));
    wire [MAGW:0] rounded = ({1'b0, mag0} + {1'b0, half}) >> shq;
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
