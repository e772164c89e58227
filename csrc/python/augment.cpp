// Bindings of the image augmentation (csrc/cpu/augment.cpp).
#include "checks.h"

namespace fastnn::bind {

void bind_augment(py::module_& m) {
    m.attr("AUGMENT_STREAM_PER_IMAGE") = kAugmentStreamPerImage;
    m.def("augment_images", [](py::handle x_obj, py::handle seed_obj, py::handle offset_obj,
                               double max_shift, bool flip, double max_rotation, double noise_std) {
        const char* fn = "augment_images";
        F32Array x = as_f32(x_obj, fn, "x");
        if (x.ndim() != 3 && x.ndim() != 4)
            fail_value("augment_images: argument 'x' must be a batch of images (N, H, W) or "
                       "(N, C, H, W), got shape " + shape_str(x));
        AugmentSpec spec;
        spec.max_shift = nonneg_arg(max_shift, fn, "max_shift");
        spec.flip = flip;
        spec.max_rotation = nonneg_arg(max_rotation, fn, "max_rotation");
        spec.noise_std = nonneg_arg(noise_std, fn, "noise_std");
        const uint64_t seed = u64_arg(seed_obj, fn, "seed"), offset = u64_arg(offset_obj, fn, "offset");
        const bool chw = x.ndim() == 4;
        const int64_t n = x.shape(0), c = chw ? x.shape(1) : 1;
        const int64_t h = x.shape(chw ? 2 : 1), w = x.shape(chw ? 3 : 2);
        auto out = new_like(x);
        float* dst = out.mutable_data();
        py::gil_scoped_release nogil;
        augment_images(x.data(), dst, n, c, h, w, spec, seed, offset);
        return out;
    }, py::arg("x"), py::kw_only(), py::arg("seed"), py::arg("offset"),
       py::arg("max_shift") = 0.0, py::arg("flip") = false, py::arg("max_rotation") = 0.0,
       py::arg("noise_std") = 0.0);
}

}  // namespace fastnn::bind
