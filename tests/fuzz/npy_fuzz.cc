// libFuzzer target: the .npy reader. The input is split (fuzz_util.h SplitInput: two length
// bytes, then the features .npy, then the labels .npy); ReadDataset(kNpy) reads the pair, the
// features alone as prediction input, and shard 1 of 2. ParseNpyHeader also runs directly on the
// raw input and on each part, and what it accepts must fit in the bytes it was given.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "tests/fuzz/fuzz_util.h"
#include "worker/data/npy.h"
#include "worker/data/readers.h"

static void CheckHeader(const uint8_t* data, size_t size) {
  const absl::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto h = logit::ParseNpyHeader(bytes, "fuzz.npy");
  if (!h.ok()) return;
  FUZZ_CHECK(h->data_offset <= size, "data_offset %zu past %zu bytes", h->data_offset, size);
  FUZZ_CHECK(h->item_size > 0 && h->num_elements >= 0, "item_size %zu, %lld elements", h->item_size,
             (long long)h->num_elements);
  const unsigned __int128 need =
      static_cast<unsigned __int128>(h->num_elements) * h->item_size + h->data_offset;
  FUZZ_CHECK(need <= size, "%lld elements of %zu bytes after offset %zu exceed %zu bytes",
             (long long)h->num_elements, h->item_size, h->data_offset, size);
  unsigned __int128 product = 1;
  for (int64_t dim : h->shape) {
    FUZZ_CHECK(dim >= 0, "negative dimension");
    product *= static_cast<uint64_t>(dim);
    if (product > (unsigned __int128)INT64_MAX) product = (unsigned __int128)INT64_MAX + 1;
  }
  FUZZ_CHECK(product == static_cast<unsigned __int128>(h->num_elements),
             "num_elements %lld is not the product of the shape", (long long)h->num_elements);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  CheckHeader(data, size);
  const logit_fuzz::Parts parts = logit_fuzz::SplitInput(data, size);
  CheckHeader(parts.a, parts.a_size);
  CheckHeader(parts.b, parts.b_size);

  static const std::string features = logit_fuzz::TempPath("features.npy");
  static const std::string labels = logit_fuzz::TempPath("labels.npy");
  logit_fuzz::WriteFile(features, parts.a, parts.a_size);
  logit_fuzz::WriteFile(labels, parts.b, parts.b_size);

  logit::ReadOptions o;
  o.path = features;
  o.labels_path = labels;
  o.format = logit::DataFormat::kNpy;
  logit::Dataset first;
  if (logit_fuzz::ReadAndCheck(o, &first)) {
    logit::ReadOptions f = o;
    f.num_features = first.num_features;
    f.classes = 2;
    f.pixel_scale = false;
    logit_fuzz::ReadAndCheck(f);
  }
  logit_fuzz::ReadVariants(o, o.num_features);
  return 0;
}
