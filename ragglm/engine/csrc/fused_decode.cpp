// One decode step of the Transformer in model.py (batch 1, one new token) as a single call.
//
// At batch 1 a step is ~10 small operations a layer; run one by one, each pays dispatch and a
// thread fork/join, which on a small model costs as much as reading the weights. Here the whole
// step runs in one OpenMP region: matrix-vector products split by output rows, heads split for
// attention, and a barrier where the next phase reads what every thread wrote.
//
// Numerics: weights bf16, everything else float32 (activations, KV cache, accumulation), as the
// "auto" dtype of the Python model, except that inputs to the products are not rounded to bf16.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

extern "C" {

struct LayerWeights {
    const float* attention_norm;  // [dim]
    const uint16_t* wqkv;         // [qkv_rows, dim] bf16: q heads, then k, then v
    const float* qkv_bias;        // [qkv_rows] or null
    const uint16_t* wo;           // [dim, q_size]
    const float* ffn_norm;        // [dim]
    const uint16_t* w_gate_up;    // [2 * inter, dim]: gate rows, then up rows
    const uint16_t* w_down;       // [dim, inter]
    float* k_cache;               // [n_kv_heads, cache_len, head_dim]
    float* v_cache;
};

struct DecodeModel {
    int64_t dim, n_layers, n_heads, n_kv_heads, head_dim, inter, vocab, rotary_dim, cache_len, interleaved;
    float norm_eps;
    const float* embedding;  // [vocab, dim]
    const float* norm;       // [dim]
    const uint16_t* head;    // [vocab, dim] bf16
    const float* cos;        // [cache_len, rotary_dim / 2]
    const float* sin;
    const LayerWeights* layers;
    float* scratch;  // decode_scratch_floats(model, threads) floats
};

static inline float bf16_to_float(uint16_t bits) {
    uint32_t widened = static_cast<uint32_t>(bits) << 16;
    float value;
    std::memcpy(&value, &widened, sizeof value);
    return value;
}

#if defined(__AVX512F__)
static inline __m512 load_bf16x16(const uint16_t* p) {
    __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));
}
#endif

// y[n - lo] = W[n, :] . x for n in [lo, hi); W is [*, K] bf16, row-major.
static void matvec_rows(const uint16_t* W, int64_t K, const float* x, int64_t lo, int64_t hi, float* y) {
    int64_t n = lo;
#if defined(__AVX512F__)
    if (K % 16 == 0) {
        // four rows at a time share each load of x; the next four are prefetched into L2 meanwhile,
        // which streams the weights ~30% faster than the hardware prefetcher alone (into L1 it gains
        // less; prefetches never fault, so reading past the matrix is harmless)
        for (; n + 4 <= hi; n += 4) {
            const uint16_t* w = W + n * K;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t k = 0; k < K; k += 16) {
                if (k % 32 == 0)  // one prefetch per 64-byte line of each row
                    for (int64_t r = 4; r < 8; r++) _mm_prefetch(reinterpret_cast<const char*>(w + r * K + k), _MM_HINT_T1);
                __m512 xv = _mm512_loadu_ps(x + k);
                a0 = _mm512_fmadd_ps(load_bf16x16(w + k), xv, a0);
                a1 = _mm512_fmadd_ps(load_bf16x16(w + K + k), xv, a1);
                a2 = _mm512_fmadd_ps(load_bf16x16(w + 2 * K + k), xv, a2);
                a3 = _mm512_fmadd_ps(load_bf16x16(w + 3 * K + k), xv, a3);
            }
            y[n - lo] = _mm512_reduce_add_ps(a0);
            y[n - lo + 1] = _mm512_reduce_add_ps(a1);
            y[n - lo + 2] = _mm512_reduce_add_ps(a2);
            y[n - lo + 3] = _mm512_reduce_add_ps(a3);
        }
    }
#endif
    for (; n < hi; n++) {
        const uint16_t* w = W + n * K;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t k = 0; k < K; k++) sum += bf16_to_float(w[k]) * x[k];
        y[n - lo] = sum;
    }
}

// This thread's share [lo, hi) of n rows, in blocks of 16 so that threads never write one cache line.
static void share(int64_t n, int64_t* lo, int64_t* hi) {
    int64_t threads = omp_get_num_threads(), id = omp_get_thread_num();
    int64_t per_thread = ((n + threads - 1) / threads + 15) / 16 * 16;
    *lo = id * per_thread < n ? id * per_thread : n;
    *hi = *lo + per_thread < n ? *lo + per_thread : n;
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

// One query head over keys [0, length) of its KV group; scores is scratch of `length` floats.
static void attend(const float* q, const float* keys, const float* values, int64_t length, int64_t head_dim,
                   float* scores, float* out) {
    float scale = 1.0f / std::sqrt(static_cast<float>(head_dim)), top = -INFINITY;
    for (int64_t j = 0; j < length; j++) {
        const float* key = keys + j * head_dim;
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t d = 0; d < head_dim; d++) dot += q[d] * key[d];
        scores[j] = dot * scale;
        top = scores[j] > top ? scores[j] : top;
    }
    float total = 0.0f;
    for (int64_t j = 0; j < length; j++) {
        scores[j] = std::exp(scores[j] - top);
        total += scores[j];
    }
    for (int64_t d = 0; d < head_dim; d++) out[d] = 0.0f;
    for (int64_t j = 0; j < length; j++) {
        const float* value = values + j * head_dim;
        float p = scores[j] / total;
#pragma omp simd
        for (int64_t d = 0; d < head_dim; d++) out[d] += p * value[d];
    }
}

int64_t decode_scratch_floats(const DecodeModel* m, int64_t threads) {
    int64_t q_size = m->n_heads * m->head_dim, kv_size = m->n_kv_heads * m->head_dim;
    // x, qkv, attention output, gate|up, activation, scores per head, a normed copy of x per thread
    return m->dim + (q_size + 2 * kv_size) + q_size + 2 * m->inter + m->inter + m->n_heads * m->cache_len +
           threads * m->dim;
}

// logits[vocab] of `token` at `position`, whose keys and values are written into the caches.
void decode_step(const DecodeModel* m, int64_t token, int64_t position, int64_t threads, float* logits) {
    const int64_t dim = m->dim, head_dim = m->head_dim, inter = m->inter;
    const int64_t q_size = m->n_heads * head_dim, kv_size = m->n_kv_heads * head_dim;
    const int64_t group = m->n_heads / m->n_kv_heads, half = m->rotary_dim / 2, length = position + 1;
    float* x = m->scratch;
    float* qkv = x + dim;
    float* attn = qkv + q_size + 2 * kv_size;
    float* gate_up = attn + q_size;
    float* act = gate_up + 2 * inter;
    float* scores = act + inter;
    float* normed_all = scores + m->n_heads * m->cache_len;
    const float* cos = m->cos + position * half;
    const float* sin = m->sin + position * half;
    std::memcpy(x, m->embedding + token * dim, dim * sizeof(float));

#pragma omp parallel num_threads(threads)
    {
        float* normed = normed_all + omp_get_thread_num() * dim;
        int64_t lo, hi;
        for (int64_t l = 0; l < m->n_layers; l++) {
            const LayerWeights& w = m->layers[l];
            rms_norm(x, w.attention_norm, dim, m->norm_eps, normed);
            share(q_size + 2 * kv_size, &lo, &hi);
            matvec_rows(w.wqkv, dim, normed, lo, hi, qkv + lo);
            if (w.qkv_bias)
                for (int64_t n = lo; n < hi; n++) qkv[n] += w.qkv_bias[n];
#pragma omp barrier
            // rotate q heads; rotate k and write k, v into the caches
#pragma omp for schedule(static)
            for (int64_t h = 0; h < m->n_heads + m->n_kv_heads; h++) {
                float* head = qkv + h * head_dim;
                rotate(head, cos, sin, m->rotary_dim, m->interleaved);
                if (h >= m->n_heads) {
                    int64_t g = h - m->n_heads, slot = (g * m->cache_len + position) * head_dim;
                    std::memcpy(w.k_cache + slot, head, head_dim * sizeof(float));
                    std::memcpy(w.v_cache + slot, qkv + q_size + kv_size + g * head_dim, head_dim * sizeof(float));
                }
            }  // implicit barrier
#pragma omp for schedule(static)
            for (int64_t h = 0; h < m->n_heads; h++) {
                int64_t g = h / group;
                attend(qkv + h * head_dim, w.k_cache + g * m->cache_len * head_dim,
                       w.v_cache + g * m->cache_len * head_dim, length, head_dim, scores + h * m->cache_len,
                       attn + h * head_dim);
            }  // implicit barrier
            share(dim, &lo, &hi);
            matvec_rows(w.wo, q_size, attn, lo, hi, normed);  // normed is free until the next norm
            for (int64_t n = lo; n < hi; n++) x[n] += normed[n - lo];
#pragma omp barrier
            rms_norm(x, w.ffn_norm, dim, m->norm_eps, normed);
            share(inter, &lo, &hi);
            matvec_rows(w.w_gate_up, dim, normed, lo, hi, gate_up + lo);
            matvec_rows(w.w_gate_up, dim, normed, inter + lo, inter + hi, gate_up + inter + lo);
            for (int64_t n = lo; n < hi; n++) {
                float g = gate_up[n];
                act[n] = g / (1.0f + std::exp(-g)) * gate_up[inter + n];
            }
#pragma omp barrier
            share(dim, &lo, &hi);
            matvec_rows(w.w_down, inter, act, lo, hi, normed);
            for (int64_t n = lo; n < hi; n++) x[n] += normed[n - lo];
#pragma omp barrier
        }
        rms_norm(x, m->norm, dim, m->norm_eps, normed);
        share(m->vocab, &lo, &hi);
        matvec_rows(m->head, dim, normed, lo, hi, logits + lo);
    }
}

}  // extern "C"
