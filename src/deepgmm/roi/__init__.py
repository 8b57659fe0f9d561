"""The left-ventricle region of interest from the images: a small supervised 2-D network.

Every deepgmm method segments inside an ROI (the left ventricle: blood pool, myocardium,
edema and scar). Where no ground truth exists, :mod:`deepgmm.roi` finds it:

- :mod:`deepgmm.roi.geometry`: slices resampled to a common in-plane spacing, centre-cropped
  and normalised, and network outputs mapped back onto the input grid;
- :mod:`deepgmm.roi.model`: the network configuration and the ROI run folder (safetensors
  weights + JSON configuration);
- :mod:`deepgmm.roi.train`: supervised training on labelled cases;
- :mod:`deepgmm.roi.postprocess`: from probabilities to a mask (largest component per slice,
  holes filled, slices without the LV left empty);
- :mod:`deepgmm.roi.predict`: masks for cases, written as ``<case>_roi.nii.gz``;
- :mod:`deepgmm.roi.quality`: Dice and crop-centre error against the ground truth.
"""
