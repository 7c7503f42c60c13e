"""Names of the app-owned st.session_state keys. A page that selects something writes it here; the next page and
the tests read or set the same key. Keys prefixed "w_" belong to widgets."""

# Sidebar widgets
CHECKPOINT = "w_checkpoint"      # str path of a .pt file or run folder
DATA_MODE = "w_data_mode"        # one of sidebar.DATA_MODES
DATA_PATH = "w_data_path"        # str, used when DATA_MODE is "path"
DATA_UPLOAD = "w_data_upload"    # the uploaded file, when DATA_MODE is "upload"
SPLIT = "w_split"                # a split name from fercore.labels.SPLIT_NAMES, or "all"
EPOCH = "w_epoch"                # int epoch of a training snapshot to replay, or None for the checkpoint itself

# Selections shared between pages (not widgets: they survive page switches)
CELL = "cell"                    # (true, predicted) class indices of the clicked confusion cell, or None
IMAGE = "image"                  # index of the selected image within the current split, or None
GALLERY_PAGE = "w_gallery_page"  # 1-based page of the cell gallery (a widget: reset it by deleting the key)
TRAIN_RUN = "train_run"          # str path of the run folder the Train page follows
UPLOADED = "uploaded"            # {upload file_id: saved path}, so an upload is written to disk once

# Page widgets whose values the tests drive
NORMALIZED = "w_normalized"      # confusion: row-normalized instead of counts
TTA = "w_tta"                    # confusion: flip test-time augmentation
CONFUSION_CHART = "w_confusion_chart"
METHOD = "w_method"              # inspect: a fercore.saliency.METHODS key
TARGET_MODE = "w_target_mode"    # inspect: predicted | true | class | contrast
TARGET_CLASS = "w_target_class"
CONTRAST_A = "w_contrast_a"
CONTRAST_B = "w_contrast_b"
THRESHOLD = "w_threshold"
LAYER = "w_layer"                # filters: conv layer name
FILTER_MODE = "w_filter_mode"    # filters: "grid" or "one"
FILTER_INDEX = "w_filter_index"
COMPARE_RUNS = "w_compare_runs"  # compare: the checkpoint paths picked (a multiselect)
OCCLUSION_PATCH = "w_occlusion_patch"    # inspect: occlusion patch side, pixels
OCCLUSION_STRIDE = "w_occlusion_stride"  # inspect: occlusion patch step, pixels
COVER_REGION = "w_cover_region"  # inspect: a fercore.occlusion.REGIONS name or "free"
COVER_ROWS = "w_cover_rows"      # inspect: the free rectangle's (top, bottom) rows, bottom exclusive
COVER_COLUMNS = "w_cover_columns"  # inspect: the free rectangle's (left, right) columns, right exclusive
LABELS_FERPLUS = "w_labels_ferplus"    # labels: score the model against the FER+ majority too
LABELS_MISLABELED = "w_labels_mislabeled"  # labels: show only the disputed faces where the model sides with FER+
LABELS_PAGE = "w_labels_page"          # labels: 1-based page of the disputed faces
TRY_SOURCE = "w_try_source"      # try it: "upload" or "camera"
TRY_UPLOAD = "w_try_upload"      # try it: the uploaded photo (kept in memory by Streamlit, never saved)
TRY_CAMERA = "w_try_camera"      # try it: the webcam picture
TRY_FACE = "w_try_face"          # try it: which found face, 0 the largest
TRY_MARGIN = "w_try_margin"      # try it: crop margin, a share of the face box's side
TRY_CENTRE = "w_try_centre"      # try it: no face found, use the photo's centre square
TRY_PHOTO = "try_photo"          # try it: (file id, decoded photo, found faces) of this session's photo, in memory
TRY_SUFFIX = "_try"              # try it: added to the Inspect page's saliency widget keys (ui.saliency_controls)
