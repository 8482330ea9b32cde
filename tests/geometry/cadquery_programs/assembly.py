import cadquery as cq

body = cq.Workplane("XY").box(20, 20, 5)
pin = cq.Workplane("XY").circle(2).extrude(10)
assy = cq.Assembly().add(body, name="body").add(pin, name="pin", loc=cq.Location((0, 0, 5)))
show_object(assy)
