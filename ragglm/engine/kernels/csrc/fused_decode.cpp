// One decode step of the Transformer in model.py (batch 1, one new token) as a single call.
//
// At batch 1 a step is ~10 small operations a layer; run one by one, each pays dispatch and a
// thread fork/join, which on a small model costs as much as reading the weights. Here the whole
// step runs in one OpenMP region: matrix-vector products split by output rows, positions split for
// attention, and a barrier where the next phase reads what every thread wrote.
//
// Numerics: weights bf16 or int8 with a scale per row, everything else float32 (activations, KV
// cache, accumulation), as the "auto" dtype of the Python model, except that inputs to the products
// are not rounded to bf16. The KV cache may be float16 instead (quantized models): keys and values
// are rounded as they are written and widened as they are read.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>
#include <omp.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

// The weight formats the step reads: bf16 rows; int8 rows with one float scale per row; int4 in
// the layout of PyTorch's CPU int4 kernel, with a bf16 scale and zero per group of columns and row;
// the same int4 layout with a float16 scale per group and no zero (GGUF's Q4_0 as the file has it).
enum Format : int64_t { BF16 = 0, INT8 = 1, INT4 = 2, INT4_SYMMETRIC = 3 };

struct Matrix {
    // BF16, INT8: [rows, cols] row-major. INT4: blocks of 64 rows, each stored column by column,
    // one byte holding rows r (low nibble) and r + 32 (high nibble): [rows / 64, cols, 32] bytes
    const void* data;
    // INT8: float [rows]. INT4: bf16 [cols / group, rows, 2], (scale, zero) with w = (q - 8) * scale + zero.
    // INT4_SYMMETRIC: float16 [rows / 64, cols / group, 64], w = (q - 8) * scale: a block's scales in
    // the order its product reads them
    const void* scales;
    int64_t format;
    int64_t group;  // INT4: columns sharing a scale and zero
};

constexpr int64_t INT4_BLOCK = 64;
constexpr int64_t MAX_INT4_GROUPS = 2048;

struct LayerWeights {
    const float* attention_norm;  // [dim]
    Matrix wqkv;                  // [qkv_rows, dim]: q heads, then k, then v
    const float* qkv_bias;        // [qkv_rows] or null
    Matrix wo;                    // [dim, q_size]
    const float* ffn_norm;        // [dim]
    Matrix w_gate_up;             // [2 * inter, dim]: gate rows, then up rows
    Matrix w_down;                // [dim, inter]
    void* k_cache;                // [n_kv_heads, cache_len, head_dim], float32 or float16 (kv_half)
    void* v_cache;
};

struct DecodeModel {
    int64_t dim, n_layers, n_heads, n_kv_heads, head_dim, inter, vocab, rotary_dim, cache_len, interleaved, kv_half;
    float norm_eps;
    const float* embedding;  // [vocab, dim]
    const float* norm;       // [dim]
    Matrix head;             // [vocab, dim]
    const float* cos;        // [cache_len, rotary_dim / 2]
    const float* sin;
    const LayerWeights* layers;
    float* scratch;  // decode_scratch_floats(model, threads) floats
};

static inline float to_float(uint16_t bf16) {
    uint32_t widened = static_cast<uint32_t>(bf16) << 16;
    float value;
    std::memcpy(&value, &widened, sizeof value);
    return value;
}

static inline float to_float(int8_t value) { return value; }

static inline float half_to_float(uint16_t half) {
    const uint32_t sign = (half & 0x8000u) << 16, exponent = (half >> 10) & 0x1Fu, mantissa = half & 0x3FFu;
    uint32_t bits;
    if (exponent == 0x1F) {
        bits = sign | 0x7F800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else {  // zero or subnormal: mantissa * 2^-24 is exact in float
        const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
        std::memcpy(&bits, &magnitude, sizeof bits);
        bits |= sign;
    }
    float value;
    std::memcpy(&value, &bits, sizeof value);
    return value;
}

// A float16 value in a KV cache (uint16_t holds bf16 weights).
struct Half {
    uint16_t bits;
};

static inline float to_float(Half value) { return half_to_float(value.bits); }

// As the Python model writes a float16 cache: clamped to float16's range (see KVCache).
static inline float clamp_half(float value) { return std::min(std::max(value, -65504.0f), 65504.0f); }

// float32 -> float16, rounded to nearest even; past the largest float16 becomes infinite.
static inline Half to_half(float value) {
#if defined(__F16C__)
    return Half{static_cast<uint16_t>(_cvtss_sh(value, _MM_FROUND_TO_NEAREST_INT))};
#else
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
    bits &= 0x7FFFFFFFu;
    if (bits >= 0x7F800000u) return Half{static_cast<uint16_t>(sign | 0x7C00u | (bits > 0x7F800000u ? 0x200u : 0u))};
    if (bits >= 0x477FF000u) return Half{static_cast<uint16_t>(sign | 0x7C00u)};
    if (bits < 0x38800000u) {  // a float16 subnormal: a whole number of 2^-24
        float magnitude;
        std::memcpy(&magnitude, &bits, sizeof magnitude);
        return Half{static_cast<uint16_t>(sign | static_cast<uint16_t>(std::nearbyint(magnitude * 16777216.0f)))};
    }
    const uint32_t rounded = bits + 0xFFFu + ((bits >> 13) & 1u);
    return Half{static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13))};
#endif
}

static inline bool is_int4(const Matrix& W) { return W.format == INT4 || W.format == INT4_SYMMETRIC; }

// Row n's (scale, zero) in group g of an int4 matrix of `rows` rows and `groups` groups.
static inline void group_scale_zero(const Matrix& W, int64_t rows, int64_t groups, int64_t g, int64_t n, float* scale,
                                    float* zero) {
    const uint16_t* scales = static_cast<const uint16_t*>(W.scales);
    if (W.format == INT4_SYMMETRIC) {
        *scale = half_to_float(scales[((n / INT4_BLOCK) * groups + g) * INT4_BLOCK + n % INT4_BLOCK]);
        *zero = 0.0f;
    } else {
        *scale = to_float(scales[(g * rows + n) * 2]);
        *zero = to_float(scales[(g * rows + n) * 2 + 1]);
    }
}

#if defined(__AVX512F__)
static inline __m512 load16(const uint16_t* bf16) {
    __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bf16));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));
}

static inline __m512 load16(const int8_t* values) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(values))));
}
#endif

// y[n - lo] = W[n, :] . x for n in [lo, hi); W is [*, K] of bf16 or int8 (scales applied by the caller).
template <typename T>
static void matvec_rows(const T* W, int64_t K, const float* x, int64_t lo, int64_t hi, float* y) {
    int64_t n = lo;
#if defined(__AVX512F__)
    if (K % 16 == 0) {
        // four rows at a time share each load of x; the next four are prefetched into L2 meanwhile,
        // which streams the weights ~30% faster than the hardware prefetcher alone (into L1 it gains
        // less; prefetches never fault, so reading past the matrix is harmless)
        const int64_t per_line = 64 / sizeof(T);
        for (; n + 4 <= hi; n += 4) {
            const T* w = W + n * K;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = 0; k < K; k += 16) {
                if (k % per_line == 0)  // one prefetch per 64-byte line of each row
                    for (int64_t r = 4; r < 8; r++) _mm_prefetch(reinterpret_cast<const char*>(w + r * K + k), _MM_HINT_T1);
                __m512 xv = _mm512_loadu_ps(x + k);
                a0 = _mm512_fmadd_ps(load16(w + k), xv, a0);
                a1 = _mm512_fmadd_ps(load16(w + K + k), xv, a1);
                a2 = _mm512_fmadd_ps(load16(w + 2 * K + k), xv, a2);
                a3 = _mm512_fmadd_ps(load16(w + 3 * K + k), xv, a3);
            }
            y[n - lo] = _mm512_reduce_add_ps(a0);
            y[n - lo + 1] = _mm512_reduce_add_ps(a1);
            y[n - lo + 2] = _mm512_reduce_add_ps(a2);
            y[n - lo + 3] = _mm512_reduce_add_ps(a3);
        }
    }
#endif
    for (; n < hi; n++) {
        const T* w = W + n * K;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t k = 0; k < K; k++) sum += to_float(w[k]) * x[k];
        y[n - lo] = sum;
    }
}

// y[n - lo] = W[n, :] . x for the rows [lo, hi) of an INT4 matrix with `rows` rows; lo and hi are
// multiples of 64. Sums run over (q - 8) x a group at a time, then take the group's scale, and its
// zero times the group's sum of x, for 64 rows at once: the layout needs no horizontal adds.
static void matvec_int4(const Matrix& W, int64_t rows, int64_t K, const float* x, int64_t lo, int64_t hi, float* y) {
    const uint8_t* packed = static_cast<const uint8_t*>(W.data);
    const int64_t groups = K / W.group;
    float x_sums[MAX_INT4_GROUPS];
    for (int64_t g = 0; g < groups; g++) {
        float sum = 0.0f;
        for (int64_t k = g * W.group; k < (g + 1) * W.group; k++) sum += x[k];
        x_sums[g] = sum;
    }
    for (int64_t block = lo / INT4_BLOCK; block < hi / INT4_BLOCK; block++) {
        const uint8_t* columns = packed + block * K * (INT4_BLOCK / 2);
        float* out = y + block * INT4_BLOCK - lo;
        for (int64_t r = 0; r < INT4_BLOCK; r++) out[r] = 0.0f;
        for (int64_t g = 0; g < groups; g++) {
            float sums[INT4_BLOCK];
            int64_t r = 0;
#if defined(__AVX512F__)
            const __m256i low_nibbles = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = g * W.group; k < (g + 1) * W.group; k++) {
                const uint8_t* column = columns + k * (INT4_BLOCK / 2);
                if (k % 2 == 0)  // a line holds two columns; fetch 64 columns (2 KB) ahead into L2
                    _mm_prefetch(reinterpret_cast<const char*>(column + 2048), _MM_HINT_T1);
                __m256i bytes = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(column));
                // q - 8 as signed bytes: rows 0-31 from the low nibbles, rows 32-63 from the high ones
                __m256i first = _mm256_sub_epi8(_mm256_and_si256(bytes, low_nibbles), eight);
                __m256i second = _mm256_sub_epi8(_mm256_and_si256(_mm256_srli_epi16(bytes, 4), low_nibbles), eight);
                __m512 xk = _mm512_set1_ps(x[k]);
                a0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(first))), xk, a0);
                a1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(first, 1))), xk, a1);
                a2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_castsi256_si128(second))), xk, a2);
                a3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm256_extracti128_si256(second, 1))), xk, a3);
            }
            _mm512_storeu_ps(sums, a0);
            _mm512_storeu_ps(sums + 16, a1);
            _mm512_storeu_ps(sums + 32, a2);
            _mm512_storeu_ps(sums + 48, a3);
            r = INT4_BLOCK;
#endif
            for (; r < INT4_BLOCK; r++) {
                float sum = 0.0f;
                for (int64_t k = g * W.group; k < (g + 1) * W.group; k++) {
                    uint8_t byte = columns[k * (INT4_BLOCK / 2) + r % 32];
                    sum += static_cast<float>((r < 32 ? byte & 0x0F : byte >> 4) - 8) * x[k];
                }
                sums[r] = sum;
            }
            for (r = 0; r < INT4_BLOCK; r++) {
                float scale, zero;
                group_scale_zero(W, rows, groups, g, block * INT4_BLOCK + r, &scale, &zero);
                out[r] += scale * sums[r] + zero * x_sums[g];
            }
        }
    }
}

#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
// The same product with x rounded to int8 in blocks of 32 (one scale each, as GGUF's Q8_0), so
// that the unsigned nibbles multiply it on the integer dot-product units (vpdpbusd: four
// products and their sum per 32-bit lane), a fraction of the float path's instructions: the
// float path is bound by them, this one by reading the weights. With w = (q - 8) * s + z and
// x = a * t in block b: sum(w x) = s * sum_b(t_b * sum(q a)) + (z - 8 s) * sum_b(t_b * sum(a)).
// Four columns of the block's 64 rows are read at a time and transposed in registers so that each
// lane holds one row's four columns; the lanes then hold rows in the order the transposes leave
// them, put back in order once per block of x.
constexpr int64_t X_BLOCK = 32;
constexpr int64_t MAX_X_BLOCKS = 2048;

static void matvec_int4_int8(const Matrix& W, int64_t rows, int64_t K, const float* x, int64_t lo, int64_t hi,
                             float* y) {
    const uint8_t* packed = static_cast<const uint8_t*>(W.data);
    const uint16_t* scales = static_cast<const uint16_t*>(W.scales);
    const int64_t groups = K / W.group, per_group = W.group / X_BLOCK;
    alignas(64) int8_t a[MAX_X_BLOCKS * X_BLOCK];
    float a_scales[MAX_X_BLOCKS], a_sums[MAX_INT4_GROUPS];  // t_b; sum_b(t_b * sum(a)) per group
    for (int64_t g = 0; g < groups; g++) a_sums[g] = 0.0f;
    for (int64_t b = 0; b < K / X_BLOCK; b++) {
        const float* xb = x + b * X_BLOCK;
        float largest = 0.0f;
        for (int64_t k = 0; k < X_BLOCK; k++) largest = std::max(largest, std::fabs(xb[k]));
        const float inverse = largest > 0.0f ? 127.0f / largest : 0.0f;
        int32_t sum = 0;
        for (int64_t k = 0; k < X_BLOCK; k++) {
            a[b * X_BLOCK + k] = static_cast<int8_t>(std::nearbyint(xb[k] * inverse));
            sum += a[b * X_BLOCK + k];
        }
        a_scales[b] = largest / 127.0f;
        a_sums[b / per_group] += a_scales[b] * static_cast<float>(sum);
    }
    const __m256i nibbles = _mm256_set1_epi8(0x0F);
    const __m256i high_halves = _mm256_set1_epi32(static_cast<int32_t>(0xFFFF0000u));
    for (int64_t block = lo / INT4_BLOCK; block < hi / INT4_BLOCK; block++) {
        const uint8_t* columns = packed + block * K * (INT4_BLOCK / 2);
        __m256 out[8];
        for (auto& o : out) o = _mm256_setzero_ps();
        for (int64_t g = 0; g < groups; g++) {
            __m256 in_group[8];  // rows 8j..8j+7: sum_b(t_b * sum(q a))
            for (auto& v : in_group) v = _mm256_setzero_ps();
            for (int64_t b = g * per_group; b < (g + 1) * per_group; b++) {
                __m256i acc[8];  // 0-3: rows {0-3, 16-19}, {4-7, 20-23}, {8-11, 24-27}, {12-15, 28-31}; 4-7: +32
                for (auto& v : acc) v = _mm256_setzero_si256();
                for (int64_t k = b * X_BLOCK; k < (b + 1) * X_BLOCK; k += 4) {
                    const uint8_t* c = columns + k * (INT4_BLOCK / 2);
                    _mm_prefetch(reinterpret_cast<const char*>(c + 2048), _MM_HINT_T1);
                    _mm_prefetch(reinterpret_cast<const char*>(c + 2048 + 64), _MM_HINT_T1);
                    const __m256i c0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
                    const __m256i c1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 32));
                    const __m256i c2 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 64));
                    const __m256i c3 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + 96));
                    const __m256i low01 = _mm256_unpacklo_epi8(c0, c1), high01 = _mm256_unpackhi_epi8(c0, c1);
                    const __m256i low23 = _mm256_unpacklo_epi8(c2, c3), high23 = _mm256_unpackhi_epi8(c2, c3);
                    const __m256i v[4] = {_mm256_unpacklo_epi16(low01, low23), _mm256_unpackhi_epi16(low01, low23),
                                          _mm256_unpacklo_epi16(high01, high23), _mm256_unpackhi_epi16(high01, high23)};
                    int32_t four;
                    std::memcpy(&four, a + k, sizeof four);
                    const __m256i ak = _mm256_set1_epi32(four);
                    for (int i = 0; i < 4; i++) {
                        acc[i] = _mm256_dpbusd_epi32(acc[i], _mm256_and_si256(v[i], nibbles), ak);
                        acc[4 + i] = _mm256_dpbusd_epi32(acc[4 + i], _mm256_and_si256(_mm256_srli_epi16(v[i], 4), nibbles), ak);
                    }
                }
                const __m256 t = _mm256_set1_ps(a_scales[b]);
                for (int half = 0; half < 2; half++) {
                    const __m256i* q = acc + 4 * half;
                    const __m256i ordered[4] = {_mm256_permute2x128_si256(q[0], q[1], 0x20), _mm256_permute2x128_si256(q[2], q[3], 0x20),
                                                _mm256_permute2x128_si256(q[0], q[1], 0x31), _mm256_permute2x128_si256(q[2], q[3], 0x31)};
                    for (int j = 0; j < 4; j++)
                        in_group[4 * half + j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ordered[j]), t, in_group[4 * half + j]);
                }
            }
            const __m256 group_sum = _mm256_set1_ps(a_sums[g]), eight = _mm256_set1_ps(8.0f);
            if (W.format == INT4_SYMMETRIC) {
                const uint16_t* halves = scales + (block * groups + g) * INT4_BLOCK;
                for (int j = 0; j < 8; j++) {
                    const __m256 scale = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(halves + 8 * j)));
                    out[j] = _mm256_fmadd_ps(scale, _mm256_fnmadd_ps(eight, group_sum, in_group[j]), out[j]);
                }
                continue;
            }
            const uint16_t* pairs = scales + (g * rows + block * INT4_BLOCK) * 2;
            for (int j = 0; j < 8; j++) {
                // eight (scale, zero) bf16 pairs: the scale is each lane's low half, the zero its high half
                const __m256i p = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pairs + 16 * j));
                const __m256 scale = _mm256_castsi256_ps(_mm256_slli_epi32(p, 16));
                const __m256 zero = _mm256_castsi256_ps(_mm256_and_si256(p, high_halves));
                out[j] = _mm256_fmadd_ps(scale, in_group[j], out[j]);
                out[j] = _mm256_fmadd_ps(_mm256_fnmadd_ps(eight, scale, zero), group_sum, out[j]);
            }
        }
        float* row = y + block * INT4_BLOCK - lo;
        for (int j = 0; j < 8; j++) _mm256_storeu_ps(row + 8 * j, out[j]);
    }
}
#endif

// 1 where int4 products round x to int8 (matvec_int4_int8 was built), else 0.
extern "C" int64_t int4_products_round_x_to_int8() {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    return 1;
#else
    return 0;
#endif
}

// The rows a thread takes of a matrix come in blocks of this many: int4 stores 64 rows together.
static int64_t row_block(const Matrix& W) { return is_int4(W) ? INT4_BLOCK : 16; }

static void matvec(const Matrix& W, int64_t rows, int64_t K, const float* x, int64_t lo, int64_t hi, float* y) {
    if (is_int4(W)) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
        if (W.group % X_BLOCK == 0 && K / X_BLOCK <= MAX_X_BLOCKS) return matvec_int4_int8(W, rows, K, x, lo, hi, y);
#endif
        matvec_int4(W, rows, K, x, lo, hi, y);
    } else if (W.format == INT8) {
        matvec_rows(static_cast<const int8_t*>(W.data), K, x, lo, hi, y);
        const float* scales = static_cast<const float*>(W.scales);
        for (int64_t n = lo; n < hi; n++) y[n - lo] *= scales[n];
    } else {
        matvec_rows(static_cast<const uint16_t*>(W.data), K, x, lo, hi, y);
    }
}

// This thread's share [lo, hi) of n rows, in blocks of `block` rows (at least 16, so that threads
// never write one cache line).
static void share(int64_t n, int64_t block, int64_t* lo, int64_t* hi) {
    int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
    int64_t per_thread = ((n + threads - 1) / threads + block - 1) / block * block;
    *lo = id * per_thread < n ? id * per_thread : n;
    *hi = *lo + per_thread < n ? *lo + per_thread : n;
}

// Thread id's share [lo, hi) of the positions [0, length) that attention reads.
static void share_positions(int64_t length, int64_t threads, int64_t id, int64_t* lo, int64_t* hi) {
    int64_t per_thread = (length + threads - 1) / threads;
    *lo = id * per_thread < length ? id * per_thread : length;
    *hi = *lo + per_thread < length ? *lo + per_thread : length;
}

static void rms_norm(const float* x, const float* weight, int64_t dim, float eps, float* out) {
    float squares = 0.0f;
    for (int64_t i = 0; i < dim; i++) squares += x[i] * x[i];
    float scale = 1.0f / std::sqrt(squares / dim + eps);
    for (int64_t i = 0; i < dim; i++) out[i] = x[i] * scale * weight[i];
}

// Rotate the first rotary_dim dims of one head in place: pairs (2i, 2i+1) when interleaved
// (GLM), (i, i + rotary_dim / 2) otherwise (Llama).
static void rotate(float* head, const float* cos, const float* sin, int64_t rotary_dim, bool interleaved) {
    int64_t half = rotary_dim / 2;
    for (int64_t i = 0; i < half; i++) {
        int64_t a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
        float x1 = head[a], x2 = head[b];
        head[a] = x1 * cos[i] - x2 * sin[i];
        head[b] = x2 * cos[i] + x1 * sin[i];
    }
}

// e^x of each x[i], in place.
static void exp_in_place(float* x, int64_t n) {
    int64_t i = 0;
#if defined(__AVX512F__)
    // 2^k * e^r with k = round(x / ln 2) and |r| <= ln 2 / 2, where a degree-7 Taylor polynomial is
    // within 1e-8 of e^r; the library's expf is one call per value, which cost more than the dot products
    const __m512 log2e = _mm512_set1_ps(1.44269504f), ln2_hi = _mm512_set1_ps(0.693145752f),
                 ln2_lo = _mm512_set1_ps(1.42860677e-6f), lowest = _mm512_set1_ps(-104.0f),
                 highest = _mm512_set1_ps(88.8f);
    static const float taylor[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_min_ps(_mm512_max_ps(_mm512_loadu_ps(x + i), lowest), highest);
        __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(v, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(k, ln2_lo, _mm512_fnmadd_ps(k, ln2_hi, v));
        __m512 p = _mm512_set1_ps(taylor[0]);
        for (int c = 1; c < 8; c++) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(taylor[c]));
        _mm512_storeu_ps(x + i, _mm512_scalef_ps(p, k));
    }
#endif
    for (; i < n; i++) x[i] = std::exp(x[i]);
}

// What one thread knows about one head after attending to its slice of the positions: the top
// score, the sum of e^(score - top), and the output weighted by those, not yet divided by the sum.
// Slices are merged with merge_slices; a thread with an empty slice leaves top = -inf, sum = 0.
static int64_t slice_floats(int64_t head_dim) { return head_dim + 2; }

static inline float to_float(float value) { return value; }

#if defined(__AVX512F__)
static inline __m512 load16(const float* values) { return _mm512_loadu_ps(values); }

static inline __m512 load16(const Half* values) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(values)));
}
#endif

// a . b, with b float32 or float16 (a KV cache row)
template <typename T>
static inline float dot(const float* a, const T* b, int64_t n) {
    int64_t d = 0;
    float sum = 0.0f;
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    for (; d + 16 <= n; d += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + d), load16(b + d), acc);
    sum = _mm512_reduce_add_ps(acc);
#endif
    for (; d < n; d++) sum += a[d] * to_float(b[d]);
    return sum;
}

// y += a * x, with x float32, float16 or int8
template <typename T>
static inline void add_scaled(float a, const T* x, float* y, int64_t n) {
    int64_t d = 0;
#if defined(__AVX512F__)
    __m512 scale = _mm512_set1_ps(a);
    for (; d + 16 <= n; d += 16)
        _mm512_storeu_ps(y + d, _mm512_fmadd_ps(scale, load16(x + d), _mm512_loadu_ps(y + d)));
#endif
    for (; d < n; d++) y[d] += a * to_float(x[d]);
}

// The query heads of one KV group (q [group, head_dim]) over positions [lo, hi); each key and
// value is read once for the whole group. scores: rows of cache_len floats, one per head.
template <typename T>
static void attend_slice(const float* q, const T* keys, const T* values, int64_t lo, int64_t hi,
                         int64_t head_dim, int64_t group, int64_t cache_len, float* scores, float* slices) {
    // keys and values stream from memory (the weights read since the last step evicted them); the
    // hardware prefetcher alone leaves attention waiting on them
    const int64_t ahead = 8 * head_dim, per_line = 64 / sizeof(T);
    float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    for (int64_t j = lo; j < hi; j++) {
        const T* key = keys + j * head_dim;
        for (int64_t d = 0; d < head_dim; d += per_line) __builtin_prefetch(key + ahead + d);
        for (int64_t i = 0; i < group; i++) scores[i * cache_len + j] = dot(q + i * head_dim, key, head_dim) * scale;
    }
    for (int64_t i = 0; i < group; i++) {
        float* row = scores + i * cache_len;
        float* slice = slices + i * slice_floats(head_dim);
        float top = -INFINITY, total = 0.0f;
#pragma omp simd reduction(max : top)
        for (int64_t j = lo; j < hi; j++) top = row[j] > top ? row[j] : top;
        for (int64_t j = lo; j < hi; j++) row[j] -= top;
        exp_in_place(row + lo, hi - lo);
#pragma omp simd reduction(+ : total)
        for (int64_t j = lo; j < hi; j++) total += row[j];
        slice[0] = top;
        slice[1] = total;
        for (int64_t d = 0; d < head_dim; d++) slice[2 + d] = 0.0f;
    }
    for (int64_t j = lo; j < hi; j++) {
        const T* value = values + j * head_dim;
        for (int64_t d = 0; d < head_dim; d += per_line) __builtin_prefetch(value + ahead + d);
        for (int64_t i = 0; i < group; i++)
            add_scaled(scores[i * cache_len + j], value, slices + i * slice_floats(head_dim) + 2, head_dim);
    }
}

// out [n_heads, head_dim] from the slices of every thread: thread t's [n_heads, slice_floats] start at
// slices + t * stride.
static void merge_slices(const float* slices, int64_t stride, int64_t threads, int64_t n_heads, int64_t head_dim,
                         float* out) {
    for (int64_t h = 0; h < n_heads; h++) {
        float top = -INFINITY, total = 0.0f;
        for (int64_t t = 0; t < threads; t++) {
            float m = slices[t * stride + h * slice_floats(head_dim)];
            top = m > top ? m : top;
        }
        float* o = out + h * head_dim;
        for (int64_t d = 0; d < head_dim; d++) o[d] = 0.0f;
        for (int64_t t = 0; t < threads; t++) {
            const float* slice = slices + t * stride + h * slice_floats(head_dim);
            if (slice[1] == 0.0f) continue;
            float weight = std::exp(slice[0] - top);
            total += weight * slice[1];
#pragma omp simd
            for (int64_t d = 0; d < head_dim; d++) o[d] += weight * slice[2 + d];
        }
        for (int64_t d = 0; d < head_dim; d++) o[d] /= total;
    }
}

extern "C" int64_t decode_scratch_floats(const DecodeModel* m, int64_t threads) {
    int64_t q_size = m->n_heads * m->head_dim, kv_size = m->n_kv_heads * m->head_dim;
    // x, qkv, gate|up, activation, scores per head; per thread: a normed copy of x, attention slices
    // of every head and the merged attention output
    return m->dim + (q_size + 2 * kv_size) + 2 * m->inter + m->inter + m->n_heads * m->cache_len +
           threads * (m->dim + m->n_heads * slice_floats(m->head_dim) + q_size);
}

// logits[vocab] of `token` at `position`, whose keys and values are written into the caches.
extern "C" void decode_step(const DecodeModel* m, int64_t token, int64_t position, int64_t threads, float* logits) {
    const int64_t dim = m->dim, head_dim = m->head_dim, inter = m->inter;
    const int64_t q_size = m->n_heads * head_dim, kv_size = m->n_kv_heads * head_dim;
    const int64_t group = m->n_heads / m->n_kv_heads, half = m->rotary_dim / 2, length = position + 1;
    float* x = m->scratch;
    float* qkv = x + dim;
    float* gate_up = qkv + q_size + 2 * kv_size;
    float* act = gate_up + 2 * inter;
    float* scores = act + inter;
    float* per_thread = scores + m->n_heads * m->cache_len;
    const int64_t per_thread_floats = dim + m->n_heads * slice_floats(head_dim) + q_size;
    const float* cos = m->cos + position * half;
    const float* sin = m->sin + position * half;
    std::memcpy(x, m->embedding + token * dim, dim * sizeof(float));

#pragma omp parallel num_threads(threads)
    {
        const int64_t id = omp_get_thread_num(), team = omp_get_num_threads();
        // this thread's floats: normed [dim], slices [n_heads, slice_floats], attn [q_size]
        float* normed = per_thread + id * per_thread_floats;
        float* slices = normed + dim;
        float* attn = slices + m->n_heads * slice_floats(head_dim);
        int64_t position_lo, position_hi;
        share_positions(length, team, id, &position_lo, &position_hi);
        int64_t lo, hi;
        for (int64_t l = 0; l < m->n_layers; l++) {
            const LayerWeights& w = m->layers[l];
            rms_norm(x, w.attention_norm, dim, m->norm_eps, normed);
            share(q_size + 2 * kv_size, row_block(w.wqkv), &lo, &hi);
            matvec(w.wqkv, q_size + 2 * kv_size, dim, normed, lo, hi, qkv + lo);
            if (w.qkv_bias)
                for (int64_t n = lo; n < hi; n++) qkv[n] += w.qkv_bias[n];
#pragma omp barrier
            // rotate q heads; rotate k and write k, v into the caches
#pragma omp for schedule(static)
            for (int64_t h = 0; h < m->n_heads + m->n_kv_heads; h++) {
                float* head = qkv + h * head_dim;
                rotate(head, cos, sin, m->rotary_dim, m->interleaved);
                if (h >= m->n_heads) {
                    const int64_t g = h - m->n_heads, slot = (g * m->cache_len + position) * head_dim;
                    const float* value = qkv + q_size + kv_size + g * head_dim;
                    if (m->kv_half) {
                        for (int64_t d = 0; d < head_dim; d++) {
                            static_cast<Half*>(w.k_cache)[slot + d] = to_half(clamp_half(head[d]));
                            static_cast<Half*>(w.v_cache)[slot + d] = to_half(clamp_half(value[d]));
                        }
                    } else {
                        std::memcpy(static_cast<float*>(w.k_cache) + slot, head, head_dim * sizeof(float));
                        std::memcpy(static_cast<float*>(w.v_cache) + slot, value, head_dim * sizeof(float));
                    }
                }
            }  // implicit barrier
            for (int64_t g = 0; g < m->n_kv_heads; g++) {
                const int64_t offset = g * m->cache_len * head_dim;
                float* head_scores = scores + g * group * m->cache_len;
                float* head_slices = slices + g * group * slice_floats(head_dim);
                if (m->kv_half)
                    attend_slice(qkv + g * group * head_dim, static_cast<const Half*>(w.k_cache) + offset,
                                 static_cast<const Half*>(w.v_cache) + offset, position_lo, position_hi, head_dim,
                                 group, m->cache_len, head_scores, head_slices);
                else
                    attend_slice(qkv + g * group * head_dim, static_cast<const float*>(w.k_cache) + offset,
                                 static_cast<const float*>(w.v_cache) + offset, position_lo, position_hi, head_dim,
                                 group, m->cache_len, head_scores, head_slices);
            }
#pragma omp barrier
            // every thread merges all heads into its own copy: the output projection reads all of it
            merge_slices(per_thread + dim, per_thread_floats, team, m->n_heads, head_dim, attn);
            share(dim, row_block(w.wo), &lo, &hi);
            matvec(w.wo, dim, q_size, attn, lo, hi, normed);  // normed is free until the next norm
            for (int64_t n = lo; n < hi; n++) x[n] += normed[n - lo];
#pragma omp barrier
            rms_norm(x, w.ffn_norm, dim, m->norm_eps, normed);
            share(inter, row_block(w.w_gate_up), &lo, &hi);
            matvec(w.w_gate_up, 2 * inter, dim, normed, lo, hi, gate_up + lo);
            matvec(w.w_gate_up, 2 * inter, dim, normed, inter + lo, inter + hi, gate_up + inter + lo);
            for (int64_t n = lo; n < hi; n++) act[n] = -gate_up[n];
            exp_in_place(act + lo, hi - lo);
            for (int64_t n = lo; n < hi; n++) act[n] = gate_up[n] / (1.0f + act[n]) * gate_up[inter + n];
#pragma omp barrier
            share(dim, row_block(w.w_down), &lo, &hi);
            matvec(w.w_down, dim, inter, act, lo, hi, normed);
            for (int64_t n = lo; n < hi; n++) x[n] += normed[n - lo];
#pragma omp barrier
        }
        rms_norm(x, m->norm, dim, m->norm_eps, normed);
        share(m->vocab, row_block(m->head), &lo, &hi);
        matvec(m->head, m->vocab, dim, normed, lo, hi, logits + lo);
    }
}


// float32 -> bf16, rounded to nearest even as torch rounds.
static inline uint16_t to_bf16(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7F800000u) == 0x7F800000u) return static_cast<uint16_t>((bits >> 16) | ((bits & 0xFFFF) ? 0x40 : 0));
    return static_cast<uint16_t>((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
}

// int4 weights [rows, K / 2] (columns 2j and 2j + 1 in the low and high nibble of byte j) -> the
// INT4 layout above: in each block of 64 rows, column 2j of rows n and n + 32 in byte (2j, n) and
// column 2j + 1 in byte (2j + 1, n) of the block's [K, 32] bytes. Byte columns go in tiles so that
// a tile's reads and writes stay in the cache.
extern "C" void pack_int4_blocks(const uint8_t* weights, int64_t rows, int64_t K, int64_t threads, uint8_t* out) {
    const int64_t half = K / 2, half_block = INT4_BLOCK / 2, tile = 64;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t block = 0; block < rows / INT4_BLOCK; block++) {
        const uint8_t* top = weights + block * INT4_BLOCK * half;
        const uint8_t* bottom = top + half_block * half;
        uint8_t* columns = out + block * K * half_block;
        for (int64_t j0 = 0; j0 < half; j0 += tile) {
            const int64_t j1 = j0 + tile < half ? j0 + tile : half;
            for (int64_t n = 0; n < half_block; n++)
                for (int64_t j = j0; j < j1; j++) {
                    const uint8_t t = top[n * half + j], b = bottom[n * half + j];
                    columns[(2 * j) * half_block + n] = static_cast<uint8_t>((t & 0x0F) | (b << 4));
                    columns[(2 * j + 1) * half_block + n] = static_cast<uint8_t>((t >> 4) | (b & 0xF0));
                }
        }
    }
}

// Integer prompt products: activations and weights in int8 with one scale per row, multiplied on
// the VNNI units (about twice bf16's rate) into int32, then scaled back. A row's result depends on
// the other rows of its product only through the outlier columns they mark (quantize_rows_int8).

// int4 weights (INT4 or INT4_SYMMETRIC) -> int8 rows [rows, K] with one float scale per row. A row's
// scale is the largest magnitude any of its groups' 16 values can take, over 127; each (scale, zero)
// group then maps its 16 values to int8 once, and a row's nibbles are looked up in that table.
extern "C" void dequantize_int4_int8(const uint8_t* packed, const uint16_t* scales, int64_t format, int64_t rows,
                                     int64_t K, int64_t group, int64_t threads, int8_t* out, float* row_scales) {
    const Matrix W{packed, scales, format, group};
    const int64_t half_block = INT4_BLOCK / 2, tile = 32, groups = K / group;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t block = 0; block < rows / INT4_BLOCK; block++) {
        const uint8_t* columns = packed + block * K * half_block;
        float inverse[INT4_BLOCK];
        for (int64_t r = 0; r < INT4_BLOCK; r++) {
            const int64_t row = block * INT4_BLOCK + r;
            float largest = 0.0f;
            for (int64_t g = 0; g < groups; g++) {
                float scale, zero;
                group_scale_zero(W, rows, groups, g, row, &scale, &zero);
                largest = std::max(largest, std::max(std::fabs(zero - 8.0f * scale), std::fabs(zero + 7.0f * scale)));
            }
            row_scales[row] = largest / 127.0f;
            inverse[r] = largest > 0.0f ? 127.0f / largest : 0.0f;
        }
        alignas(64) uint8_t rows_of_tile[32][tile];
        alignas(16) int8_t table[16];
        for (int64_t k0 = 0; k0 < K; k0 += tile) {
            for (int64_t c = 0; c < tile; c++)
                for (int64_t r = 0; r < half_block; r++) rows_of_tile[r][c] = columns[(k0 + c) * half_block + r];
            for (int64_t r = 0; r < INT4_BLOCK; r++) {
                float scale, zero;
                group_scale_zero(W, rows, groups, k0 / group, block * INT4_BLOCK + r, &scale, &zero);
                for (int q = 0; q < 16; q++)
                    table[q] = static_cast<int8_t>(std::nearbyint(((q - 8) * scale + zero) * inverse[r]));
                const int shift = r < half_block ? 0 : 4;
                const uint8_t* bytes = rows_of_tile[r % half_block];
                int8_t* row = out + (block * INT4_BLOCK + r) * K + k0;
#if defined(__AVX2__)
                __m256i nibbles = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bytes));
                nibbles = _mm256_and_si256(_mm256_srli_epi16(nibbles, shift), _mm256_set1_epi8(0x0F));
                const __m256i lookup = _mm256_broadcastsi128_si256(_mm_load_si128(reinterpret_cast<const __m128i*>(table)));
                _mm256_storeu_si256(reinterpret_cast<__m256i*>(row), _mm256_shuffle_epi8(lookup, nibbles));
#else
                for (int64_t c = 0; c < tile; c++) row[c] = table[(bytes[c] >> shift) & 0x0F];
#endif
            }
        }
    }
}

// bf16 rows [rows, K] -> int8 rows with one float scale per row, rounded to nearest even. A few
// columns of trained models carry values tens of times a row's root mean square; one of them would
// set the whole row's scale and round its other values away. Columns where any row holds a value
// above `outlier` times its row's root mean square are marked in `outliers` [K] (0 or 1) and left out
// of the scales; their values are clamped to the int8 range, and scale_int32_bf16 adds back what the
// clamp cut off.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
#define QUANTIZE_AVX512 1
#else
#define QUANTIZE_AVX512 0
#endif

extern "C" void quantize_rows_int8(const uint16_t* x, int64_t rows, int64_t K, float outlier, int64_t threads,
                                   int8_t* out, float* row_scales, uint8_t* outliers) {
    std::memset(outliers, 0, K);
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; row++) {
            const uint16_t* in = x + row * K;
            float squares = 0.0f;
            int64_t k = 0;
#if QUANTIZE_AVX512
            __m512 sum = _mm512_setzero_ps();
            for (; k + 16 <= K; k += 16) sum = _mm512_fmadd_ps(load16(in + k), load16(in + k), sum);
            squares = _mm512_reduce_add_ps(sum);
#endif
            for (; k < K; k++) squares += to_float(in[k]) * to_float(in[k]);
            const float limit = outlier * std::sqrt(squares / K);
            k = 0;
#if QUANTIZE_AVX512
            const __m512 bound = _mm512_set1_ps(limit);
            for (; k + 16 <= K; k += 16) {
                if (!_mm512_cmp_ps_mask(_mm512_abs_ps(load16(in + k)), bound, _CMP_GT_OQ)) continue;
                for (int64_t i = k; i < k + 16; i++)  // rare: a row holds a few
                    if (std::fabs(to_float(in[i])) > limit) {
#pragma omp atomic write
                        outliers[i] = 1;
                    }
            }
#endif
            for (; k < K; k++)
                if (std::fabs(to_float(in[k])) > limit) {
#pragma omp atomic write
                    outliers[k] = 1;
                }
        }
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; row++) {
            const uint16_t* in = x + row * K;
            int8_t* q = out + row * K;
            float largest = 0.0f;
            int64_t k = 0;
#if QUANTIZE_AVX512
            __m512 top = _mm512_setzero_ps();
            for (; k + 16 <= K; k += 16) {
                const __mmask16 kept = _mm_cmpeq_epi8_mask(_mm_loadu_si128(reinterpret_cast<const __m128i*>(outliers + k)),
                                                           _mm_setzero_si128());
                top = _mm512_mask_max_ps(top, kept, top, _mm512_abs_ps(load16(in + k)));
            }
            largest = _mm512_reduce_max_ps(top);
#endif
            for (; k < K; k++)
                if (!outliers[k]) largest = std::max(largest, std::fabs(to_float(in[k])));
            row_scales[row] = largest / 127.0f;
            const float inverse = largest > 0.0f ? 127.0f / largest : 0.0f;
            k = 0;
#if QUANTIZE_AVX512
            const __m512 scale = _mm512_set1_ps(inverse), high = _mm512_set1_ps(127.0f), low = _mm512_set1_ps(-127.0f);
            for (; k + 16 <= K; k += 16) {
                const __m512 value = _mm512_roundscale_ps(_mm512_mul_ps(load16(in + k), scale),
                                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                const __m512i whole = _mm512_cvtps_epi32(_mm512_max_ps(low, _mm512_min_ps(high, value)));
                _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtepi32_epi8(whole));
            }
#endif
            for (; k < K; k++) {
                const float value = std::nearbyint(to_float(in[k]) * inverse);
                q[k] = static_cast<int8_t>(std::max(-127.0f, std::min(127.0f, value)));
            }
        }
    }
}

// weight[:, columns] of an int8 [N, K] weight, transposed: [n, N], each chosen column a row, taken 16
// weight rows at a time (the columns' bytes of those rows stay in cache from one column to the next).
extern "C" void gather_columns_int8(const int8_t* weight, int64_t N, int64_t K, const int64_t* columns, int64_t n,
                                    int64_t threads, int8_t* out) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t o0 = 0; o0 < N; o0 += 16) {
        const int64_t count = std::min<int64_t>(16, N - o0);
        int8_t tile[16] = {};
        for (int64_t j = 0; j < n; j++) {
            const int8_t* in = weight + o0 * K + columns[j];
            if (count == 16) {  // a loop of constant length, unrolled: 1.7x faster than the general one
                for (int64_t r = 0; r < 16; r++) tile[r] = in[r * K];
            } else {
                for (int64_t r = 0; r < count; r++) tile[r] = in[r * K];
            }
            std::memcpy(out + j * N + o0, tile, count);
        }
    }
}

// int32 products [rows, N] -> bf16, each times its row's and its column's scale. Where the outlier
// columns (`columns`, n of them; `chosen` their weight columns from gather_columns_int8) held values
// the int8 rows clamped, the part clamped away is added in float: x - row_scale * quantized, times
// that weight column. Only those values: the rest of an outlier column rounds like any other. A
// value was clamped when it lies above 127.5 steps, which the columns that set a row's scale never
// reach (their largest is 127 steps), so `columns` may hold the outlier columns of several pieces.
extern "C" void scale_int32_bf16(const int32_t* products, const float* row_scales, const float* column_scales,
                                 const uint16_t* x, const int8_t* quantized, int64_t K, const int64_t* columns,
                                 int64_t n, const int8_t* chosen, int64_t rows, int64_t N, int64_t threads,
                                 uint16_t* out) {
#pragma omp parallel num_threads(threads)
    {
        std::vector<float> values(N);
#pragma omp for schedule(static)
        for (int64_t row = 0; row < rows; row++) {
            const float scale = row_scales[row];
            const int32_t* product = products + row * N;
            for (int64_t o = 0; o < N; o++) values[o] = static_cast<float>(product[o]) * scale;
            for (int64_t j = 0; j < n; j++) {
                const int64_t k = columns[j];
                const float value = to_float(x[row * K + k]);
                if (std::fabs(value) > 127.5f * scale)
                    add_scaled(value - scale * quantized[row * K + k], chosen + j * N, values.data(), N);
            }
            for (int64_t o = 0; o < N; o++) out[row * N + o] = to_bf16(values[o] * column_scales[o]);
        }
    }
}
