"""H&E image features for STAIG: spot patches, the published frequency filtering, ResNet backbones and BYOL."""
