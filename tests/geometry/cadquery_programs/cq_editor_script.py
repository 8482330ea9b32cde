"""A flange as a CQ-editor script: parameters, a label built with str.format, shown under CQ-editor's __cq_main__."""
import cadquery as cq

OUTER, BORE, THICKNESS, HOLES = 60.0, 20.0, 8.0, 6


def flange(outer, bore, thickness, holes):
    body = cq.Workplane("XY").circle(outer / 2).circle(bore / 2).extrude(thickness)
    return body.faces(">Z").workplane().polarArray(outer * 0.35, 0, 360, holes).hole(5)


label = "flange_{}x{:.1f}".format(int(OUTER), THICKNESS)
part = flange(OUTER, BORE, THICKNESS, HOLES)

if __name__ == "__cq_main__":
    show_object(part, name=label, options={"color": "steelblue"})
