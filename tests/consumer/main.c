/* The smallest program against the installed C API: builds a zoo model with random weights and
 * runs one image through it. Exit 0 when it gets finite logits. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <metaformer.h>

int main(void) {
  mf_options opt = mf_default_options();
  opt.threads = 1;
  mf_model* model = NULL;
  if (mf_model_create("poolformer_s12", NULL, &opt, &model) != MF_OK) {
    fprintf(stderr, "consumer: %s\n", mf_last_error());
    return 1;
  }
  mf_model_info info;
  mf_model_get_info(model, &info);
  const int64_t n = (int64_t)info.in_chans * info.input_size * info.input_size;
  float* image = calloc((size_t)n, sizeof(float));
  float* logits = calloc((size_t)info.num_classes, sizeof(float));
  const mf_status s = mf_model_run(model, image, 1, info.in_chans, info.input_size, info.input_size, logits,
                                   info.num_classes);
  int ok = s == MF_OK;
  for (int i = 0; ok && i < info.num_classes; ++i) ok = isfinite(logits[i]);
  printf("consumer: metaformer %s, %s, %d logits %s\n", mf_version(), info.name, info.num_classes, ok ? "ok" : "BAD");
  mf_model_free(model);
  free(image);
  free(logits);
  return ok ? 0 : 1;
}
