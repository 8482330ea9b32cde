import cadquery as cq

# a long bar drawn as a rectangle on the XZ plane, larger than the +-100 frame
result = cq.Workplane("XZ").rect(120, 40).extrude(300)
