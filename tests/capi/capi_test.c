/* The C API from C: a golden model's logits against timm's (tests/data/golden/<family>), and every
 * misuse the API promises to refuse with a status and a message.
 * Usage: capi_test GOLDEN_DIR  (a folder with config.json, weights.safetensors, io.safetensors) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metaformer.h"

static int failures = 0;

#define CHECK(cond, ...)                                \
  do {                                                  \
    if (!(cond)) {                                      \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
      fprintf(stderr, __VA_ARGS__);                     \
      fprintf(stderr, "\n");                            \
      ++failures;                                       \
    }                                                   \
  } while (0)

/* Reads one float32 tensor out of a safetensors file: just enough of the format for a test (the
 * header's "NAME":{"dtype":"F32","shape":[...],"data_offsets":[a,b]}). */
static float* read_tensor(const char* path, const char* name, int64_t* count) {
  FILE* f = fopen(path, "rb");
  if (!f) return NULL;
  unsigned char len_bytes[8];
  uint64_t header_len = 0;
  float* out = NULL;
  char* header = NULL;
  if (fread(len_bytes, 1, 8, f) != 8) goto done;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
  if (header_len > (1u << 24)) goto done;
  header = malloc(header_len + 1);
  if (fread(header, 1, header_len, f) != header_len) goto done;
  header[header_len] = '\0';
  char key[128];
  snprintf(key, sizeof key, "\"%s\":", name);
  const char* at = strstr(header, key);
  if (!at) goto done;
  const char* offsets = strstr(at, "\"data_offsets\":[");
  if (!offsets) goto done;
  unsigned long long begin = 0, end = 0;
  if (sscanf(offsets + strlen("\"data_offsets\":["), "%llu,%llu", &begin, &end) != 2 || end < begin) goto done;
  *count = (int64_t)((end - begin) / sizeof(float));
  out = malloc(end - begin);
  if (fseek(f, (long)(8 + header_len + begin), SEEK_SET) != 0 || fread(out, 1, end - begin, f) != end - begin) {
    free(out);
    out = NULL;
  }
done:
  free(header);
  fclose(f);
  return out;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: capi_test GOLDEN_DIR\n");
    return 2;
  }
  char config[4096], weights[4096], io[4096];
  snprintf(config, sizeof config, "%s/config.json", argv[1]);
  snprintf(weights, sizeof weights, "%s/weights.safetensors", argv[1]);
  snprintf(io, sizeof io, "%s/io.safetensors", argv[1]);

  CHECK(mf_api_version() >= METAFORMER_API_VERSION, "library API %d older than header %d", mf_api_version(),
        METAFORMER_API_VERSION);

  /* The golden model: logits within the golden tolerance of timm's float64 ones (tests/test_golden.cpp). */
  mf_options opt = mf_default_options();
  opt.threads = 2;
  mf_model* model = NULL;
  mf_status s = mf_model_create(config, weights, &opt, &model);
  CHECK(s == MF_OK && model, "create: %s", mf_last_error());
  if (!model) return 1;
  mf_model_info info;
  CHECK(mf_model_get_info(model, &info) == MF_OK, "info: %s", mf_last_error());
  int64_t n_in = 0, n_ref = 0;
  float* input = read_tensor(io, "input", &n_in);
  float* expected = read_tensor(io, "logits", &n_ref);
  CHECK(input && expected, "cannot read %s", io);
  if (!input || !expected) return 1;
  const int64_t batch = n_ref / info.num_classes;
  const int64_t hw = n_in / (batch * info.in_chans);
  /* The golden inputs are [2, 3, 61, 47]-like: recover H and W from the file's shape string. */
  int64_t height = 0, width = 0;
  {
    FILE* f = fopen(io, "rb");
    char buf[4096] = {0};
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    (void)got;
    const char* at = strstr(buf + 8, "\"input\":");
    const char* shape = at ? strstr(at, "\"shape\":[") : NULL;
    long long b = 0, c = 0, h = 0, w = 0;
    if (shape && sscanf(shape + 9, "%lld,%lld,%lld,%lld", &b, &c, &h, &w) == 4) {
      height = h;
      width = w;
    }
  }
  CHECK(height * width == hw, "input shape: %lld x %lld vs %lld", (long long)height, (long long)width, (long long)hw);
  float* logits = calloc((size_t)n_ref, sizeof(float));
  s = mf_model_run(model, input, batch, info.in_chans, height, width, logits, n_ref);
  CHECK(s == MF_OK, "run: %s", mf_last_error());
  double num = 0, den = 0;
  for (int64_t i = 0; i < n_ref; ++i) {
    num += ((double)logits[i] - expected[i]) * ((double)logits[i] - expected[i]);
    den += (double)expected[i] * expected[i];
  }
  const double rel = sqrt(num / den);
  CHECK(rel <= 2e-5, "logits relative error %.3g > 2e-5", rel);
  printf("golden %s: %lld x %d logits, relative error %.3g\n", info.name, (long long)batch, info.num_classes, rel);

  /* Misuse: each refused with a status and a one-line message. */
  s = mf_model_run(model, NULL, batch, info.in_chans, height, width, logits, n_ref);
  CHECK(s == MF_ERROR_INVALID_ARGUMENT && strlen(mf_last_error()) > 0, "NULL input accepted");
  s = mf_model_run(model, input, batch, info.in_chans + 1, height, width, logits, n_ref);
  CHECK(s == MF_ERROR_INVALID_ARGUMENT && strstr(mf_last_error(), "channel"), "wrong channels: %s", mf_last_error());
  s = mf_model_run(model, input, batch, info.in_chans, height, width, logits, n_ref - 1);
  CHECK(s == MF_ERROR_INVALID_ARGUMENT && strstr(mf_last_error(), "logits holds"), "small output: %s",
        mf_last_error());
  s = mf_model_run(model, input, 0, info.in_chans, height, width, logits, n_ref);
  CHECK(s == MF_ERROR_INVALID_ARGUMENT, "batch 0 accepted");
  CHECK(mf_model_get_info(model, NULL) == MF_ERROR_INVALID_ARGUMENT, "NULL info accepted");

  mf_model* other = NULL;
  opt.threads = -3;
  s = mf_model_create(config, weights, &opt, &other);
  CHECK(s == MF_ERROR_INVALID_ARGUMENT && other == NULL && strstr(mf_last_error(), "threads"), "threads -3: %s",
        mf_last_error());
  opt.threads = 1;
  opt.backend = "tpu";
  s = mf_model_create(config, weights, &opt, &other);
  CHECK(s == MF_ERROR_UNSUPPORTED && strstr(mf_last_error(), "tpu"), "backend tpu: %s", mf_last_error());
  /* cuda: a model where the build has CUDA and the machine a GPU, otherwise one clear refusal */
  opt.backend = "cuda";
  s = mf_model_create(config, weights, &opt, &other);
  CHECK((s == MF_OK && other != NULL) ||
            (s == MF_ERROR_UNSUPPORTED && other == NULL && strstr(mf_last_error(), "cuda")),
        "backend cuda: %s", mf_last_error());
  if (other) mf_model_free(other);
  other = NULL;
  opt.backend = NULL;
  opt.dtype = "fp8";
  s = mf_model_create(config, weights, &opt, &other);
  CHECK(s == MF_ERROR_UNSUPPORTED && strstr(mf_last_error(), "fp8"), "dtype fp8: %s", mf_last_error());
  opt.dtype = NULL;
  s = mf_model_create(config, "/nonexistent.safetensors", &opt, &other);
  CHECK(s != MF_OK && other == NULL && strstr(mf_last_error(), "nonexistent"), "missing weights: %s",
        mf_last_error());
  s = mf_model_create("no_such_model", NULL, &opt, &other);
  CHECK(s != MF_OK && other == NULL && strstr(mf_last_error(), "no_such_model"), "unknown model: %s",
        mf_last_error());
  CHECK(mf_model_create(NULL, NULL, &opt, &other) == MF_ERROR_INVALID_ARGUMENT, "NULL model accepted");
  CHECK(mf_model_create(config, weights, &opt, NULL) == MF_ERROR_INVALID_ARGUMENT, "NULL out accepted");

  /* A freed handle is refused, and freeing it twice is harmless. */
  mf_model_free(model);
  s = mf_model_run(model, input, batch, info.in_chans, height, width, logits, n_ref);
  CHECK(s == MF_ERROR_INVALID_HANDLE && strstr(mf_last_error(), "freed"), "freed handle: %s", mf_last_error());
  mf_model_free(model);
  mf_model_free(NULL);

  /* A zoo model without weights is created (random, seeded) and reports timm's preprocessing. */
  opt = mf_default_options();
  opt.threads = 1;
  s = mf_model_create("poolformer_s12", NULL, &opt, &other);
  CHECK(s == MF_OK, "zoo model: %s", mf_last_error());
  if (s == MF_OK) {
    CHECK(mf_model_get_info(other, &info) == MF_OK && info.input_size == 224 && info.num_classes == 1000 &&
              fabs(info.crop_pct - 0.9) < 1e-9 && strcmp(info.interpolation, "bicubic") == 0 &&
              fabs(info.mean[0] - 0.485f) < 1e-6,
          "poolformer_s12 info: size %d classes %d crop %.3f %s", info.input_size, info.num_classes, info.crop_pct,
          info.interpolation);
    mf_model_free(other);
  }

  free(input);
  free(expected);
  free(logits);
  if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
  else printf("all C API checks passed\n");
  return failures ? 1 : 0;
}
