# HCE image registry for release 1.47.0: images are at registry.example.com:5000/harness/<image-name>:<tag> (project scope).
# Written by chaosmirror; NEXT-STEPS.md says how to apply it.
resource "harness_chaos_image_registry" "chaosmirror" {
  org_id              = "default"
  project_id          = "chaos_lab"
  registry_server     = "registry.example.com:5000"
  registry_account    = "harness"
  is_private          = true
  secret_name         = "hce-pull"
  is_default          = false
  is_override_allowed = true
  use_custom_images   = true

  custom_images {
    log_watcher = "registry.example.com:5000/harness/chaos-log-watcher:1.47.0@sha256:6326b0d53d9e34d24b78adb0eef2b761966f33de60be7e9ad4864fb2cfce81c0"
    ddcr        = "registry.example.com:5000/harness/chaos-ddcr:1.47.0@sha256:0a112d0b8427422fb117b7398501df68f0bf34ba8bcbf29984d4e0bca0fd60fc"
    ddcr_lib    = "registry.example.com:5000/harness/chaos-ddcr-faults:1.47.0@sha256:7bd96842a7abe3a267d4c9bfaa25fbaabc7c883c91860b7f6613f79e03bf449e"
    ddcr_fault  = "registry.example.com:5000/harness/chaos-ddcr-faults:1.47.0@sha256:7bd96842a7abe3a267d4c9bfaa25fbaabc7c883c91860b7f6613f79e03bf449e"
  }
}
