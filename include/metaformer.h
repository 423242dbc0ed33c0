/* metaformer.h: the C API of metaformer.cpp (libmetaformer.so).
 *
 * Plain C99; no C++ type and no exception crosses it. Every function that can fail returns an
 * mf_status; on failure, mf_last_error() gives a one-line message (kept per thread, valid until that
 * thread's next API call).
 *
 * Threads: every function may be called from any thread. Creating and freeing distinct models may
 * run concurrently. Runs are serialised process-wide (each one already uses the model's thread
 * count; the engine's thread pool and kernel scratch space are shared), so two threads running
 * models at once are safe and simply take turns. Freeing a model while another thread runs it is a
 * caller error; a freed (or never created) handle passed to any call is detected and refused with
 * MF_ERROR_INVALID_HANDLE as long as its address has not been reused by a newer model.
 *
 * Versioning: METAFORMER_API_VERSION grows when functions are added; existing signatures and
 * struct layouts do not change within a major version. mf_api_version() gives the library's, so a
 * program can check that the library it loaded is at least as new as the header it was built with.
 */
#ifndef METAFORMER_H
#define METAFORMER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define METAFORMER_API_VERSION 1

#if defined(__GNUC__)
#define MF_API __attribute__((visibility("default")))
#else
#define MF_API
#endif

typedef enum mf_status {
  MF_OK = 0,
  MF_ERROR_INVALID_ARGUMENT = 1, /* a null pointer, a wrong size or an out-of-range option */
  MF_ERROR_INVALID_HANDLE = 2,   /* a model that was freed or never created */
  MF_ERROR_IO = 3,               /* a file that cannot be read or is malformed */
  MF_ERROR_UNSUPPORTED = 4,      /* a backend or dtype this build or machine does not have */
  MF_ERROR_RUNTIME = 5           /* anything else the engine refused (message says what) */
} mf_status;

/* How a model runs. Zero-initialise it (or use mf_default_options()) and set what you need. */
typedef struct mf_options {
  const char* backend; /* "cpu" (default when NULL), "ref" (plain reference loops) or "cuda" (GPU 0; a
                          build with CUDA and a GPU, else MF_ERROR_UNSUPPORTED) */
  const char* dtype;   /* "fp32" (default when NULL) or "bf16" (matrix products in bf16; cpu) */
  int threads;         /* 0: all hardware threads; otherwise 1..1024 */
  int num_classes;     /* 0: the weights' classifier size (or the description's without weights) */
} mf_options;

/* What a model expects and produces. The strings live as long as the model. */
typedef struct mf_model_info {
  const char* name;          /* zoo name, or the JSON description's "name" */
  int in_chans;              /* channels of the input */
  int input_size;            /* the evaluation resolution (square), as timm's pretrained_cfg */
  int num_classes;           /* logits per image */
  double crop_pct;           /* timm's eval transform: resize shorter side to size / crop_pct */
  const char* interpolation; /* "bicubic", "bilinear" */
  const char* crop_mode;     /* "center", ... */
  float mean[4];             /* per input channel (the first in_chans are meaningful) */
  float std[4];
  int64_t num_parameters;
} mf_model_info;

typedef struct mf_model mf_model;

MF_API int mf_api_version(void);
MF_API const char* mf_version(void); /* "0.1.0" */
MF_API const char* mf_last_error(void);
MF_API mf_options mf_default_options(void);

/* Creates a model. `model` is a zoo name ("caformer_s18") or the path of a JSON description (a
 * string ending in ".json"); `weights` is a .safetensors file with timm's key names, or NULL for
 * seeded random weights (seed 0; outputs are then meaningless). `options` may be NULL. */
MF_API mf_status mf_model_create(const char* model, const char* weights, const mf_options* options,
                                 mf_model** out);
MF_API void mf_model_free(mf_model* model); /* NULL is a no-op */

MF_API mf_status mf_model_get_info(const mf_model* model, mf_model_info* out);

/* Runs a batch: `input` is float32 NCHW [batch, channels, height, width], C-contiguous, owned by
 * the caller (not modified); `logits` receives [batch, num_classes] floats and must hold
 * `logits_capacity` >= batch * num_classes of them. Any height and width the model's strides allow
 * are accepted. */
MF_API mf_status mf_model_run(mf_model* model, const float* input, int64_t batch, int64_t channels, int64_t height,
                              int64_t width, float* logits, int64_t logits_capacity);

#ifdef __cplusplus
}
#endif

#endif /* METAFORMER_H */
