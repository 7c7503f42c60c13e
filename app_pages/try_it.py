"""Try it: your own face through the model (a webcam picture or an uploaded photo), with the Inspect page's
pictures. The photo stays in this session's memory: it is never written to disk nor put in a server-wide cache."""

import streamlit as st

from ui import analysis, guards, keys, saliency_controls, sidebar
from ui.errors import shown_errors

SOURCES = {"upload": "Upload a photo", "camera": "Webcam"}

st.title("Try it")
selection = sidebar.selection()
guards.need_checkpoint(selection)
loaded = guards.need_model(selection)

from fercore import faces, render  # noqa: E402 -- after the first paint


def photo_file():
    """The uploaded or webcam file (in memory), or None. The webcam is asked for only when chosen, so opening the
    page does not make the browser ask for the camera."""
    source = st.radio("Photo", list(SOURCES), format_func=SOURCES.get, horizontal=True, key=keys.TRY_SOURCE)
    if source == "camera":
        return st.camera_input("Look at the camera", key=keys.TRY_CAMERA)
    return st.file_uploader("A photo with a face (PNG or JPEG)", type=["png", "jpg", "jpeg"], key=keys.TRY_UPLOAD,
                            help=f"At most {st.get_option('server.maxUploadSize')} MB; it is not saved anywhere")


def read_photo(file):
    """(photo RGB, faces largest first), decoded and searched once per file, kept in session memory only."""
    memo = st.session_state.get(keys.TRY_PHOTO)
    if memo is None or memo[0] != file.file_id:
        image = faces.read_image(file.getvalue(), name=file.name)
        memo = st.session_state[keys.TRY_PHOTO] = (file.file_id, image, faces.find_faces(image))
    return memo[1], memo[2]


def pick_box(image, found):
    """The face to crop: the user's pick among those found (largest first), or the centre square if none."""
    if not found:
        st.warning("No face found in this photo (the detector wants a frontal face, not too small).",
                   icon=":material/warning:")
        if not st.toggle("Use the centre of the photo instead", value=True, key=keys.TRY_CENTRE):
            st.stop()
        return faces.centre_box(image)
    if len(found) == 1:
        return found[0]
    choice = st.radio("Face", range(len(found)), horizontal=True, key=keys.TRY_FACE,
                      format_func=lambda i: f"{i + 1} ({found[i].width} px{', largest' if i == 0 else ''})",
                      help=f"{len(found)} faces found, largest first")
    return found[choice]


file = photo_file()
if file is None:
    st.info("Upload a photo or take a webcam picture: the face is found, cropped to 48x48 grey as FER2013's "
            "faces are, and shown with what the model predicts and where it looks.", icon=":material/info:")
    st.stop()
photo = None
with shown_errors("read the photo"):
    photo, found = read_photo(file)
if photo is None:
    st.stop()
box = pick_box(photo, found)
margin = st.slider("Margin around the face", 0.0, 0.5, faces.DEFAULT_MARGIN, 0.05, format="percent",
                   key=keys.TRY_MARGIN, help="Grows the face's square by this share of its side on each edge; "
                                             "0: the detector's square, which is how FER2013's faces are cropped")
face = faces.crop_face(photo, box, margin=margin)
left, right = st.columns([2, 1])
left.image(faces.draw_box(photo, box), caption=f"{file.name}: the face at {box.x}, {box.y}, {box.width} px",
           width="stretch")
right.image(render.upscale(face, 6), caption="What the model sees (48x48 grey)", width="stretch")

c1, c2, c3 = st.columns([1.2, 1.5, 1.3])
method, target, options = saliency_controls.method_controls(selection, c1, c2, labelled=False,
                                                            suffix=keys.TRY_SUFFIX)
display, mask = saliency_controls.display_controls(c3, suffix=keys.TRY_SUFFIX)
with shown_errors("compute the saliency map"):
    probabilities, saliency = analysis.face_analysis(loaded, face, method, target, options)
    panels = render.saliency_panels(face, saliency, **display, **mask)
    columns = st.columns(4)
    for column, (title, image) in zip(columns, panels.items()):
        column.image(render.upscale(image, 6), caption=title, width="stretch")
    st.caption(render.describe_mask(scaling=display["scaling"], **mask))
    st.download_button("Download PNG", render.panels_png(panels), file_name=f"saliency_photo_{method}.png",
                       mime="image/png", icon=":material/download:", key="w_try_download")
    st.plotly_chart(render.probability_bars(probabilities, title="Probabilities"), key="try_probabilities")
