# HCE image registry for release 1.30.0: images are at mirror.example.com/hce/acme/<image-name>:<tag> (infrastructure scope).
# Written by chaosmirror; NEXT-STEPS.md says how to apply it.
resource "harness_chaos_image_registry" "chaosmirror" {
  org_id              = "o"
  project_id          = "p"
  infra_id            = "infra-1"
  registry_server     = "mirror.example.com/hce"
  registry_account    = "acme"
  is_private          = true
  secret_name         = "pull"
  is_default          = false
  is_override_allowed = false
  use_custom_images   = false
}
