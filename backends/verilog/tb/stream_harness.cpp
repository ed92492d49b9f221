// etch stream harness: drives any etch Verilog design through its stream ports.
//
// Every design etch emits (tensor engine, hardwired) has one top module with the ports
//   clk, rst                                       one clock, synchronous active-high reset
//   in_valid, in_ready, in_data[IN_BEAT*8-1:0]     input beats (valid/ready handshake)
//   out_valid, out_ready, out_data[OUT_BEAT*8-1:0] output beats (valid/ready handshake)
// and optionally (built with -DETCH_STATS) stat_busy, stat_layer[15:0]: which layer the
// design is working on, for cycles per layer.
//
// One inference is IN_BYTES input bytes, zero-padded to whole beats, and OUT_BYTES output
// bytes read from whole beats. The harness streams N inferences back to back through one
// simulation and writes the output bytes and a JSON line of cycle statistics.
//
// usage: sim IN.bin OUT.bin STATS.json N IN_BYTES IN_BEAT OUT_BYTES OUT_BEAT MAX_CYCLES
//            [STALL_PERCENT SEED] [+trace=WAVE.vcd]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "Vtop.h"
#include "verilated.h"
#if VM_TRACE
#include "verilated_vcd_c.h"
#endif

namespace {

template <typename T>
void put_bits(T& port, const uint8_t* p, size_t nbytes) {
    uint64_t v = 0;
    for (size_t i = 0; i < nbytes && i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    port = static_cast<T>(v);
}

template <std::size_t N>
void put_bits(VlWide<N>& port, const uint8_t* p, size_t nbytes) {
    for (std::size_t w = 0; w < N; ++w) {
        uint32_t v = 0;
        for (size_t b = 0; b < 4; ++b) {
            size_t i = 4 * w + b;
            if (i < nbytes) v |= static_cast<uint32_t>(p[i]) << (8 * b);
        }
        port[w] = v;
    }
}

template <typename T>
void get_bits(const T& port, uint8_t* p, size_t nbytes) {
    uint64_t v = static_cast<uint64_t>(port);
    for (size_t i = 0; i < nbytes && i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

template <std::size_t N>
void get_bits(const VlWide<N>& port, uint8_t* p, size_t nbytes) {
    for (size_t i = 0; i < nbytes && i < 4 * N; ++i)
        p[i] = static_cast<uint8_t>(port[i / 4] >> (8 * (i % 4)));
}

std::vector<uint8_t> read_file(const char* path) {
    std::vector<uint8_t> data;
    FILE* f = std::fopen(path, "rb");
    if (!f) return data;
    uint8_t buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.insert(data.end(), buf, buf + n);
    std::fclose(f);
    return data;
}

int fail(const char* msg) {
    std::fprintf(stderr, "etch-sim: %s\n", msg);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 10) return fail("usage: sim IN OUT STATS N IN_BYTES IN_BEAT OUT_BYTES OUT_BEAT MAX");
    const char* in_path = argv[1];
    const char* out_path = argv[2];
    const char* stats_path = argv[3];
    const uint64_t n = std::strtoull(argv[4], nullptr, 10);
    const size_t in_bytes = std::strtoull(argv[5], nullptr, 10);
    const size_t in_beat = std::strtoull(argv[6], nullptr, 10);
    const size_t out_bytes = std::strtoull(argv[7], nullptr, 10);
    const size_t out_beat = std::strtoull(argv[8], nullptr, 10);
    const uint64_t max_cycles = std::strtoull(argv[9], nullptr, 10);
    const int stall = argc > 10 ? std::atoi(argv[10]) : 0;
    std::srand(argc > 11 ? std::atoi(argv[11]) : 1);
    if (!in_beat || !out_beat) return fail("beat sizes must be positive");

    const size_t in_beats = (in_bytes + in_beat - 1) / in_beat;
    const size_t out_beats = (out_bytes + out_beat - 1) / out_beat;
    std::vector<uint8_t> raw = read_file(in_path);
    if (raw.size() != n * in_bytes) return fail("input file size does not match N * IN_BYTES");
    std::vector<uint8_t> in(n * in_beats * in_beat, 0);  // each inference padded to beats
    for (uint64_t k = 0; k < n; ++k)
        if (in_bytes) std::memcpy(&in[k * in_beats * in_beat], &raw[k * in_bytes], in_bytes);
    std::vector<uint8_t> out(n * out_beats * out_beat, 0);

    auto ctx = std::make_unique<VerilatedContext>();
    ctx->commandArgs(argc, argv);
    auto top = std::make_unique<Vtop>(ctx.get());
#if VM_TRACE
    std::unique_ptr<VerilatedVcdC> tfp;
    const char* wave = ctx->commandArgsPlusMatch("trace=");
    if (wave && std::strlen(wave) > 7) {
        ctx->traceEverOn(true);
        tfp = std::make_unique<VerilatedVcdC>();
        top->trace(tfp.get(), 99);
        tfp->open(wave + 7);
    }
#endif
    uint64_t cycle = 0;
    auto tick = [&]() {
        top->clk = 1;
        top->eval();
#if VM_TRACE
        if (tfp) tfp->dump(2 * cycle + 1);
#endif
        ++cycle;
        top->clk = 0;
        top->eval();
#if VM_TRACE
        if (tfp) tfp->dump(2 * cycle);
#endif
    };
    top->clk = 0;
    top->rst = 1;
    top->in_valid = 0;
    top->out_ready = 0;
    top->eval();
    for (int i = 0; i < 4; ++i) tick();
    top->rst = 0;
    top->eval();
    cycle = 0;

    const uint64_t in_total = n * in_beats, out_total = n * out_beats;
    uint64_t in_idx = 0, out_idx = 0, busy = 0;
    std::vector<uint64_t> first_in(n, 0), last_out(n, 0);
    std::map<unsigned, uint64_t> layer_cycles;
    while (out_idx < out_total) {
        if (cycle >= max_cycles) {
            std::fprintf(stderr, "etch-sim: no progress: %llu of %llu output beats after %llu "
                         "cycles\n", (unsigned long long)out_idx, (unsigned long long)out_total,
                         (unsigned long long)cycle);
            return 3;
        }
        const bool offer = in_idx < in_total && !(stall && std::rand() % 100 < stall);
        top->in_valid = offer;
        if (offer) put_bits(top->in_data, &in[in_idx * in_beat], in_beat);
        top->out_ready = !(stall && std::rand() % 100 < stall);
        top->eval();
        const bool in_fire = top->in_valid && top->in_ready;
        const bool out_fire = top->out_valid && top->out_ready;
        if (out_fire) get_bits(top->out_data, &out[out_idx * out_beat], out_beat);
#ifdef ETCH_STATS
        if (top->stat_busy) {
            ++busy;
            ++layer_cycles[static_cast<unsigned>(top->stat_layer)];
        }
#endif
        if (in_fire && in_idx % in_beats == 0) first_in[in_idx / in_beats] = cycle;
        if (out_fire && (out_idx + 1) % out_beats == 0) last_out[out_idx / out_beats] = cycle + 1;
        tick();
        in_idx += in_fire;
        out_idx += out_fire;
    }
#if VM_TRACE
    if (tfp) tfp->close();
#endif
    top->final();

    FILE* f = std::fopen(out_path, "wb");
    if (!f) return fail("cannot write the output file");
    for (uint64_t k = 0; k < n; ++k)
        std::fwrite(&out[k * out_beats * out_beat], 1, out_bytes, f);
    std::fclose(f);

    FILE* s = std::fopen(stats_path, "w");
    if (!s) return fail("cannot write the stats file");
    uint64_t lat_sum = 0, lat_max = 0;
    for (uint64_t k = 0; k < n; ++k) {
        uint64_t lat = last_out[k] - first_in[k];
        lat_sum += lat;
        if (lat > lat_max) lat_max = lat;
    }
    std::fprintf(s, "{\"cycles\": %llu, \"n\": %llu, \"latency_mean\": %.3f, "
                 "\"latency_max\": %llu, \"busy\": %llu, \"layers\": {",
                 (unsigned long long)cycle, (unsigned long long)n, n ? double(lat_sum) / n : 0.0,
                 (unsigned long long)lat_max, (unsigned long long)busy);
    bool first = true;
    for (auto& kv : layer_cycles) {
        std::fprintf(s, "%s\"%u\": %llu", first ? "" : ", ", kv.first,
                     (unsigned long long)kv.second);
        first = false;
    }
    std::fprintf(s, "}}\n");
    std::fclose(s);
    return 0;
}
