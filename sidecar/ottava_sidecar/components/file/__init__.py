"""The file building block (Layotto's file API): files streamed in chunks, by path, in a store."""
