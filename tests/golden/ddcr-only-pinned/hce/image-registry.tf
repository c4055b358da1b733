# HCE image registry for release 1.94.4: images are at harbor.example.com/proxy/harness/<image-name>:<tag> (account scope).
# Written by chaosmirror; NEXT-STEPS.md says how to apply it.
resource "harness_chaos_image_registry" "chaosmirror" {
  registry_server     = "harbor.example.com/proxy"
  registry_account    = "harness"
  is_private          = true
  secret_name         = "regcred"
  is_default          = false
  is_override_allowed = false
  use_custom_images   = true

  custom_images {
    log_watcher = "harbor.example.com/proxy/harness/chaos-log-watcher:1.94.0@sha256:8ffddbd754ab1869ad564d97c3105a358d86aa79214dfec0767f65c4a3d7c4be"
    ddcr        = "harbor.example.com/proxy/harness/chaos-ddcr:1.94.0@sha256:232391e63a02bd3579dbde520d221f2e89c2d1cf0f8585bd56dae02a761fea78"
    ddcr_lib    = "harbor.example.com/proxy/harness/chaos-ddcr-faults:1.94.0@sha256:ec7bd0749f20b84b9f839b3671cf6494246b6bf32c9b0a06c894382de6566e69"
    ddcr_fault  = "harbor.example.com/proxy/harness/chaos-ddcr-faults:1.94.0@sha256:ec7bd0749f20b84b9f839b3671cf6494246b6bf32c9b0a06c894382de6566e69"
  }
}
