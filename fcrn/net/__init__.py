"""Network definitions: the ResNet backbone, FCRN variants, paper zoo, weight conversion."""
