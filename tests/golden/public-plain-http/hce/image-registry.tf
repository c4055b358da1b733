# HCE image registry for release 1.47.0: images are at 127.0.0.1:5000/harness/<image-name>:<tag> (account scope).
# Written by chaosmirror; NEXT-STEPS.md says how to apply it.
resource "harness_chaos_image_registry" "chaosmirror" {
  registry_server     = "127.0.0.1:5000"
  registry_account    = "harness"
  is_private          = false
  is_default          = true
  is_override_allowed = false
  use_custom_images   = false
}
