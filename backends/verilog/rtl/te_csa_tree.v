// te_csa_tree: a Wallace tree of 3:2 compressors: N operands -> a carry-save pair.
//
// Each level groups its operands in threes and replaces every group by its bitwise sum
// (x ^ y ^ z) and carry (majority, shifted up one bit); leftovers pass to the next level,
// until two remain: sum + carry = the sum of the N operands, modulo 2^W. No carry
// propagates: the depth is ~log_1.5(N/2) full adders, and one carry-propagate adder after
// the tree (the caller's) finishes the sum. Operand bits that are constant zero (the
// unused low and high bits of shifted partial products) reduce to half adders or wires
// when the tree is synthesised with its operands.
`default_nettype none
module te_csa_tree #(
    parameter integer N = 3,                  // operands, >= 1
    parameter integer W = 16                  // bits per operand
) (
    input  wire [N*W-1:0] ops,                // operand k at [k*W +: W], unsigned
    output wire [W-1:0]   sum,                // sum + carry = sum of ops (mod 2^W)
    output wire [W-1:0]   carry
);
    // Operands at level l of a tree of n inputs.
    function automatic integer width_at(input integer n, input integer l);
        integer k;
        begin
            width_at = n;
            for (k = 0; k < l; k = k + 1)
                if (width_at > 2) width_at = 2 * (width_at / 3) + width_at % 3;
        end
    endfunction

    // Levels until at most two operands remain.
    function automatic integer depth(input integer n);
        begin
            depth = 0;
            while (width_at(n, depth) > 2) depth = depth + 1;
        end
    endfunction

    // First slot of level l in the flat vector that holds every level.
    function automatic integer slot(input integer n, input integer l);
        integer k;
        begin
            slot = 0;
            for (k = 0; k < l; k = k + 1) slot = slot + width_at(n, k);
        end
    endfunction

    localparam integer LEVELS = depth(N);
    localparam integer LAST   = slot(N, LEVELS);            // the final one or two operands
    localparam integer SLOTS  = LAST + width_at(N, LEVELS);

    wire [W-1:0] v [0:SLOTS-1];               // level 0 = ops, then each level's results

    genvar l, g;
    generate
        for (g = 0; g < N; g = g + 1) begin : g_in
            assign v[g] = ops[g*W +: W];
        end
        for (l = 0; l < LEVELS; l = l + 1) begin : g_level
            localparam integer IN  = slot(N, l);
            localparam integer OUT = slot(N, l + 1);
            localparam integer G   = width_at(N, l) / 3;
            for (g = 0; g < G; g = g + 1) begin : g_csa
                wire [W-1:0] x = v[IN + 3*g];
                wire [W-1:0] y = v[IN + 3*g + 1];
                wire [W-1:0] z = v[IN + 3*g + 2];
                assign v[OUT + 2*g]     = x ^ y ^ z;
                assign v[OUT + 2*g + 1] = ((x & y) | (x & z) | (y & z)) << 1;
            end
            for (g = 0; g < width_at(N, l) % 3; g = g + 1) begin : g_pass
                assign v[OUT + 2*G + g] = v[IN + 3*G + g];
            end
        end
        if (SLOTS - LAST == 2) begin : g_pair
            assign sum   = v[LAST];
            assign carry = v[LAST + 1];
        end else begin : g_single
            assign sum   = v[LAST];
            assign carry = {W{1'b0}};
        end
    endgenerate
endmodule
`default_nettype wire
