"""MRI volumes and slices, with no knowledge of lesions or of the benchmark built from them.

- :mod:`.nifti`: T1 NIfTI files on disk (read, reoriented to RAS+), the volumes and brain masks of a folder,
  subject IDs, :func:`voxel_size`;
- :mod:`.brain`: the MNI152 template and its brain mask, computed brain masks, Otsu's thresholds;
- :mod:`.anatomy`: the axial band of levels with enough brain, a volume prepared for slicing
  (:class:`Anatomy`), the template anatomy;
- :mod:`.slices`: axial slices of pseudo-subjects (:class:`Variability`: deformation, intensity curve, bias
  field, noise) scaled within the brain.

Image convention: a slice is seen from above with anterior at the top and the subject's left on the left
(``imshow`` shows it the right way up).

The package re-exports nothing: import each name from its module (``from xaiutils.domain.mri.slices import
Variability``).
"""
